//! Everything a running burrowd is told, with the defaults in one place, and where it is
//! read from: the command line, a config file, service URLs, users files.

pub mod cli;
pub mod config_file;
pub mod egress;
pub mod rules;
pub mod service_url;
pub mod summary;
mod text_file;
pub mod units;
pub mod users;

use crate::wire::addr::TargetAddr;
use crate::wire::printable::Printable;
use egress::Egress;
use rules::{Cidr, Rules};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;
use users::Users;

/// One listening service.
#[derive(Debug, Clone)]
pub enum ServiceSpec {
    Socks(SocksSpec),
    TcpForward(TcpForwardSpec),
    UdpForward(UdpForwardSpec),
}

/// A proxy server: what `--listen` starts. The first byte a client sends picks the
/// protocol: 5 is SOCKS5, 4 is SOCKS4/4a, anything else begins an HTTP/1.x request.
#[derive(Debug, Clone)]
pub struct SocksSpec {
    pub addr: SocketAddr,
    /// With any user or users file, SOCKS5 and HTTP clients must log in with one of them, whatever
    /// the table holds at the time; none given means no login.
    pub users: Users,
    pub socks4: Socks4Policy,
    /// Whether SOCKS5 is served: not on an `http://` service.
    pub socks5: bool,
    /// Whether HTTP proxy requests are served: on `socks://`, `--listen` (unless
    /// `--no-http`) and `http://`; not on `socks5://`.
    pub http: bool,
    /// Where its sessions' outbound traffic leaves from.
    pub egress: Egress,
}

/// Whether a SOCKS service answers SOCKS4/4a requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socks4Policy {
    /// Served when the service has no users; refused otherwise, since SOCKS4 cannot
    /// carry a password.
    Auto,
    /// Served even when the service has users (`--socks4`).
    On,
    /// Never served (`--no-socks4`).
    Off,
}

/// `tcp://ADDR/TARGET`: every accepted connection is relayed to one fixed target.
#[derive(Debug, Clone)]
pub struct TcpForwardSpec {
    pub addr: SocketAddr,
    pub target: TargetAddr,
    pub egress: Egress,
}

/// `udp://ADDR/TARGET?ttl=DUR`: datagrams from each client address are forwarded to one
/// fixed target through an outbound socket of that client's own.
#[derive(Debug, Clone)]
pub struct UdpForwardSpec {
    pub addr: SocketAddr,
    pub target: TargetAddr,
    /// A client's session ends after this long with no datagram either way.
    pub ttl: Duration,
    pub egress: Egress,
}

/// One upstream proxy of the chain (`-F`); outbound traffic goes through each in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub kind: HopKind,
    pub addr: TargetAddr,
    pub credentials: Option<Credentials>,
}

/// The protocol an upstream hop speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// `socks5://`: CONNECT, BIND and UDP ASSOCIATE.
    Socks5,
    /// `http://`: an HTTP proxy reached with CONNECT, so TCP only.
    Http,
}

impl HopKind {
    pub fn scheme(self) -> &'static str {
        match self {
            HopKind::Socks5 => "socks5",
            HopKind::Http => "http",
        }
    }
}

/// An RFC 1929 login for an upstream proxy: the bytes that go on the wire, kept apart
/// from the URL on, so a name may hold a ':' of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

// Written by hand so passwords never reach a log line.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, password hidden)", String::from_utf8_lossy(&self.user))
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some(credentials) => {
                let user = String::from_utf8_lossy(&credentials.user);
                write!(f, "{}://{}@{}", self.kind.scheme(), Printable(&user), self.addr)
            }
            None => write!(f, "{}://{}", self.kind.scheme(), self.addr),
        }
    }
}

impl SocksSpec {
    pub fn new(addr: SocketAddr) -> Self {
        SocksSpec {
            addr,
            users: Users::default(),
            socks4: Socks4Policy::Auto,
            socks5: true,
            http: true,
            egress: Egress::default(),
        }
    }
}

impl ServiceSpec {
    pub fn listen_addr(&self) -> SocketAddr {
        match self {
            ServiceSpec::Socks(socks) => socks.addr,
            ServiceSpec::TcpForward(forward) => forward.addr,
            ServiceSpec::UdpForward(forward) => forward.addr,
        }
    }

    /// Where the service's outbound traffic leaves from.
    pub fn egress(&self) -> &Egress {
        match self {
            ServiceSpec::Socks(socks) => &socks.egress,
            ServiceSpec::TcpForward(forward) => &forward.egress,
            ServiceSpec::UdpForward(forward) => &forward.egress,
        }
    }

    pub fn egress_mut(&mut self) -> &mut Egress {
        match self {
            ServiceSpec::Socks(socks) => &mut socks.egress,
            ServiceSpec::TcpForward(forward) => &mut forward.egress,
            ServiceSpec::UdpForward(forward) => &mut forward.egress,
        }
    }

    /// A SOCKS service anyone who can reach it may use: it listens beyond loopback and
    /// has no users, or lets SOCKS4 in without a login (`--socks4`).
    pub fn is_open_proxy(&self) -> bool {
        match self {
            ServiceSpec::Socks(socks) => {
                (!socks.users.require_login() || socks.socks4 == Socks4Policy::On) && !socks.addr.ip().is_loopback()
            }
            // A forwarder reaches only its one target.
            ServiceSpec::TcpForward(_) | ServiceSpec::UdpForward(_) => false,
        }
    }
}

/// Options applied to every TCP socket burrowd accepts or opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Idle time before TCP keepalive probes start; `None` turns keepalive off.
    pub keepalive: Option<Duration>,
    /// SO_SNDBUF and SO_RCVBUF in bytes; `None` leaves the operating system's choice.
    pub sndbuf: Option<usize>,
    pub rcvbuf: Option<usize>,
}

/// The timeouts every accepted client starts with, from its listener: reads are bounded
/// by the handshake timeout, writes by the relay's write timeout, which bounds the
/// handshake's replies too. Each phase sets a timeout only where it wants another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientTimeouts {
    pub read: Duration,
    pub write: Duration,
}

/// The longest a relay's write may wait for room: the shorter of the idle and half-close
/// timeouts, so that a peer that stops reading is judged like one that stops sending.
pub(crate) fn relay_write_timeout(idle: Option<Duration>, half_close: Duration) -> Duration {
    idle.map_or(half_close, |idle| idle.min(half_close))
}

/// How the relay moves bytes between a session's two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// splice(2) through a pipe: bytes never enter user space. Linux only.
    Splice,
    /// Read into a buffer and write it out: works everywhere.
    Copy,
}

/// UDP ASSOCIATE: the relay sockets and how long an association may sit idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// An association with no datagram either way for this long ends; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Ports the client-facing relay socket is bound from; `None` lets the OS pick.
    pub port_range: Option<RangeInclusive<u16>>,
    /// The address put in the UDP ASSOCIATE reply instead of the relay socket's own, for a
    /// server behind NAT.
    pub advertise: Option<IpAddr>,
    /// SO_SNDBUF and SO_RCVBUF of every UDP socket; `None` leaves the operating system's choice.
    pub sndbuf: Option<usize>,
    pub rcvbuf: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub services: Vec<ServiceSpec>,
    /// Worker threads, and so sessions served at once.
    pub max_clients: usize,
    /// Clients that may wait for a worker when all are busy and none can be reclaimed;
    /// more are refused.
    pub queue: usize,
    /// Live sessions one client address (an IPv6 client: its /64) may hold; `None` means
    /// half of `max_clients`.
    pub max_clients_per_ip: Option<usize>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a BIND waits for its one incoming connection.
    pub bind_timeout: Duration,
    /// A session with no traffic either way for this long is closed; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Once one side has sent its FIN, the session is closed if the other direction moves
    /// no byte for this long. More than zero.
    pub half_close_timeout: Duration,
    pub drain_timeout: Duration,
    /// Bytes each relay direction moves per read.
    pub buffer_size: usize,
    pub relay: RelayMode,
    pub socket: SocketOptions,
    /// Upstream proxies every outbound connection goes through, in order; empty means
    /// connect directly.
    pub chain: Vec<Hop>,
    pub udp: UdpOptions,
    /// Sessions (client addresses) each `udp://` service serves at once, a thread each.
    pub udp_max_sessions: usize,
    /// Of those, how many one client address may hold; `None` means half.
    pub udp_max_sessions_per_ip: Option<usize>,
    /// Who may use the proxy and where they may go (`--allow`, `--deny`, `--rules`).
    pub rules: Rules,
    /// Where the status pages (`/sessions`, `/metrics`) listen; `None`: nowhere.
    pub status: Option<SocketAddr>,
    /// Sources (load balancers) whose every TCP connection must begin with a PROXY
    /// protocol header, whose client address then stands for the connection's
    /// (`--proxy-protocol`); empty: no header is read from anyone.
    pub proxy_protocol: Vec<Cidr>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
pub const DEFAULT_QUEUE: usize = 128;
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UDP_MAX_SESSIONS: usize = 256;
/// The most any count flag (`--max-clients`, `--queue`, the per-address shares, the UDP
/// sessions) may be: a thread or a few descriptors each, so far more than one host serves,
/// and small enough that every sum formed from them stays exact.
pub const MAX_COUNT: usize = 1_000_000;
/// As long as Linux keeps a socket in FIN-WAIT-2 whose peer never closes (tcp_fin_timeout).
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UDP_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Chosen by measurement on loopback (iperf3 through a tcp:// forward, 16K to 2M): 1 MiB
/// gave the best ratio to direct for 1 and 8 streams; see docs/performance.md. Only a
/// direction that is moving data holds one.
pub const DEFAULT_BUFFER_SIZE: usize = 1024 * 1024;
/// Copy: on loopback splice measured no faster for one stream and slower for eight, since
/// loopback skbs must be copied into pipe pages anyway; see docs/performance.md.
pub const DEFAULT_RELAY: RelayMode = RelayMode::Copy;

impl Default for Config {
    fn default() -> Self {
        Config {
            services: vec![ServiceSpec::Socks(SocksSpec::new(DEFAULT_LISTEN.parse().expect("valid default")))],
            max_clients: DEFAULT_MAX_CLIENTS,
            queue: DEFAULT_QUEUE,
            max_clients_per_ip: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            bind_timeout: DEFAULT_BIND_TIMEOUT,
            idle_timeout: None,
            half_close_timeout: DEFAULT_HALF_CLOSE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            buffer_size: DEFAULT_BUFFER_SIZE,
            relay: DEFAULT_RELAY,
            socket: SocketOptions { keepalive: Some(DEFAULT_KEEPALIVE), sndbuf: None, rcvbuf: None },
            chain: Vec::new(),
            udp: UdpOptions {
                idle_timeout: Some(DEFAULT_UDP_IDLE_TIMEOUT),
                port_range: None,
                advertise: None,
                sndbuf: None,
                rcvbuf: None,
            },
            udp_max_sessions: DEFAULT_UDP_MAX_SESSIONS,
            udp_max_sessions_per_ip: None,
            rules: Rules::default(),
            status: None,
            proxy_protocol: Vec::new(),
        }
    }
}

impl Config {
    /// What every accepted client's socket starts with (see [`ClientTimeouts`]).
    pub(crate) fn client_timeouts(&self) -> ClientTimeouts {
        ClientTimeouts {
            read: self.handshake_timeout,
            write: relay_write_timeout(self.idle_timeout, self.half_close_timeout),
        }
    }

    /// Live sessions one client address may hold: `--max-clients-per-ip`, or else half
    /// the workers, so that one address (a scanner, or a NAT full of clients) always
    /// leaves the other half to everyone else.
    pub fn max_clients_per_ip(&self) -> usize {
        self.max_clients_per_ip.unwrap_or(self.max_clients / 2).max(1)
    }

    /// Whether a connection from `source` must begin with a PROXY protocol header.
    pub fn sends_proxy_header(&self, source: IpAddr) -> bool {
        self.proxy_protocol.iter().any(|trusted| trusted.contains(source))
    }

    /// Sessions one client address may hold on a `udp://` service: the flag, or half.
    pub fn udp_max_sessions_per_ip(&self) -> usize {
        self.udp_max_sessions_per_ip.unwrap_or(self.udp_max_sessions / 2).max(1)
    }

    /// A config for tests and embedding: one SOCKS listener on `addr` (port 0 picks a free
    /// port), everything else default.
    pub fn socks_on(addr: SocketAddr) -> Self {
        Config { services: vec![ServiceSpec::Socks(SocksSpec::new(addr))], ..Config::default() }
    }

    /// The same with username/password login required for `users` (`NAME:PASSWORD`).
    pub fn socks_with_users(addr: SocketAddr, users: &[&str]) -> Self {
        let mut spec = SocksSpec::new(addr);
        for entry in users {
            spec.users.add_entry(entry).expect("valid NAME:PASSWORD");
        }
        Config { services: vec![ServiceSpec::Socks(spec)], ..Config::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_proxy_means_no_login_needed_beyond_loopback() {
        let service = |addr: &str, users: &[&str], socks4| {
            let mut spec = SocksSpec::new(addr.parse().unwrap());
            for entry in users {
                spec.users.add_entry(entry).unwrap();
            }
            ServiceSpec::Socks(SocksSpec { socks4, ..spec })
        };
        use Socks4Policy::*;
        assert!(service("0.0.0.0:1080", &[], Auto).is_open_proxy());
        assert!(service("0.0.0.0:1080", &["u:p"], On).is_open_proxy(), "--socks4 needs no login");
        assert!(!service("0.0.0.0:1080", &["u:p"], Auto).is_open_proxy());
        assert!(!service("0.0.0.0:1080", &["u:p"], Off).is_open_proxy());
        assert!(!service("127.0.0.1:1080", &[], On).is_open_proxy());
        assert!(!service("[::1]:1080", &[], Auto).is_open_proxy());
    }
}
