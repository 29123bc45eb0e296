//! A running server: binding every service's socket, starting the accept loops and the
//! worker pool clients are handed to, stopping and draining.

mod accept;
mod proxied;
mod status;

use crate::config::egress::BindOut;
use crate::config::rules::Rules;
use crate::config::users::Users;
use crate::config::{Config, ServiceSpec};
use crate::forward;
use crate::net::admission::{self, Admission};
use crate::net::interfaces;
use crate::net::sockopt;
use crate::net::worker_pool::WorkerPool;
use crate::outbound;
use crate::session::Context;
use crate::session::stats::Snapshot;
use accept::Acceptor;
use status::Status;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack for session workers. They run the handshake and name resolution (getaddrinfo
/// and its NSS modules are the deepest callers) and then copy one relay direction.
const WORKER_STACK: usize = 256 * 1024;

/// A running server. Dropping it does not stop it; call [`Server::stop_accepting`].
pub struct Server {
    ctx: Arc<Context>,
    /// Every service's bound address, in the order the services were given.
    addrs: Vec<SocketAddr>,
    /// The status listener's bound address, with `--status`.
    status_addr: Option<SocketAddr>,
    /// The TCP listeners' accept threads. UDP services' receive threads are not joined:
    /// they keep serving live sessions after a stop and end with the last one.
    accept_threads: Vec<(SocketAddr, JoinHandle<()>)>,
    stopping: Arc<AtomicBool>,
}

/// A service's socket, bound before anything starts so a bad address fails the start.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Server {
    /// Binds every service's socket, then starts serving. Fails, naming the address, if
    /// any cannot be bound.
    pub fn start(config: Config) -> io::Result<Server> {
        shield_host(&config.rules, "start");
        let mut bound = Vec::new();
        for spec in &config.services {
            let addr = spec.listen_addr();
            check_egress(spec)?;
            let socket = match spec {
                ServiceSpec::UdpForward(_) => sockopt::udp_bind(addr, &config.udp).map(Bound::Udp),
                _ => sockopt::listen(addr, &config.socket, config.client_timeouts()).map(Bound::Tcp),
            };
            let socket = socket.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            bound.push((socket, spec.clone()));
        }
        let limits = admission_limits(&config);
        let (admission, queue_watch) = Admission::new(limits);
        let workers = Arc::new(WorkerPool::new("burrowd-worker", limits.workers, limits.pool_waiting(), WORKER_STACK));
        let status_listener = match config.status {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} (--status): {e}")))?,
            ),
            None => None,
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context::new(config, Arc::clone(&stopping)));
        // With no queue places, no client ever waits for a worker.
        if limits.queue > 0 {
            let ctx = Arc::clone(&ctx);
            std::thread::Builder::new()
                .name("burrowd-queue".into())
                .spawn(move || accept::watch_queue(&ctx, queue_watch))?;
        }
        let mut addrs = Vec::new();
        let mut accept_threads = Vec::new();
        for (socket, spec) in bound {
            match (socket, spec) {
                (Bound::Udp(socket), ServiceSpec::UdpForward(udp)) => {
                    let addr = socket.local_addr()?;
                    log::info!("listening on udp {addr}: forward to {} (ttl {:?})", udp.target, udp.ttl);
                    forward::udp::start(Arc::clone(&ctx), udp, socket, WORKER_STACK)?;
                    addrs.push(addr);
                }
                (Bound::Tcp(listener), spec) => {
                    let addr = listener.local_addr()?;
                    log::info!("listening on {addr}: {}", spec_summary(&spec));
                    let acceptor = Acceptor {
                        ctx: Arc::clone(&ctx),
                        admission: Arc::clone(&admission),
                        workers: Arc::clone(&workers),
                        stopping: Arc::clone(&stopping),
                        spec: Arc::new(spec),
                        addr,
                        balanced: Arc::default(),
                    };
                    let thread = std::thread::Builder::new()
                        .name("burrowd-accept".into())
                        .spawn(move || acceptor.run(listener))?;
                    addrs.push(addr);
                    accept_threads.push((addr, thread));
                }
                (Bound::Udp(_), _) => unreachable!("only udp:// services are bound to UDP sockets"),
            }
        }
        let status_addr = match status_listener {
            Some(listener) => Some(start_status(&ctx, &workers, listener)?),
            None => None,
        };
        let rules = ctx.config.rules.current();
        if !rules.is_empty() {
            log::info!("{} access rule(s) in force", rules.len());
        }
        for hop in &ctx.config.chain {
            log::info!("outbound connections go through {hop}");
        }
        Ok(Server { ctx, addrs, status_addr, accept_threads, stopping })
    }

    /// The bound addresses, in the order the services were given (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Where `--status` listens, its port resolved.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// The live-session table that `/sessions` serves, for SIGUSR1 to log.
    pub fn session_table(&self) -> String {
        self.ctx.live.table()
    }

    pub fn stats(&self) -> Snapshot {
        self.ctx.stats.snapshot()
    }

    /// Stops every accept loop and closes the TCP listeners; a UDP service starts no new
    /// sessions. Sessions already started go on.
    pub fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A connection to ourselves is how a thread blocked in accept() learns to stop. One
        // that cannot be made (the listener's address has left the host) would leave its
        // thread blocked for good: that thread is not waited for, and ends with the process.
        let woken: Vec<bool> = self
            .accept_threads
            .iter()
            .map(|(addr, _)| match TcpStream::connect_timeout(&wake_address(*addr), Duration::from_secs(1)) {
                Ok(_) => true,
                Err(e) => {
                    log::warn!("cannot wake the accept loop of {addr} to stop it ({e}); it ends with the process");
                    false
                }
            })
            .collect();
        for ((_, thread), woken) in self.accept_threads.drain(..).zip(woken) {
            if woken {
                let _ = thread.join();
            }
        }
    }

    /// Reads this host's interface addresses and the `--rules` and `--users` files again
    /// (SIGHUP): sessions started from now on
    /// use the new tables, live ones keep theirs, and a file that fails to parse leaves
    /// the table in force, with one line saying where and why.
    pub fn reload(&self) {
        let config = &self.ctx.config;
        shield_host(&config.rules, "reload");
        if config.rules.has_files() {
            match config.rules.reload() {
                Ok(count) => log::info!("reload: {count} access rule(s) in force"),
                Err(e) => log::warn!("reload: the rules in force stay: {e}"),
            }
        }
        let mut reloaded: Vec<&Users> = Vec::new();
        for spec in &config.services {
            let ServiceSpec::Socks(socks) = spec else { continue };
            // Services given the same users share one table: read its files once.
            if !socks.users.has_files() || reloaded.iter().any(|users| users.shares_table_with(&socks.users)) {
                continue;
            }
            match socks.users.reload() {
                Ok(count) => log::info!("reload: {count} user(s) for {}", socks.addr),
                Err(e) => log::warn!("reload: the users in force for {} stay: {e}", socks.addr),
            }
            reloaded.push(&socks.users);
        }
    }

    /// Waits until no session is left or `timeout` passes; true if none is left.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.ctx.stats.snapshot().active > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// Reads this host's interface addresses for the rules' protection to shield (see
/// `config::rules`); if they cannot be read, the ones shielded so far stay, said in one line.
fn shield_host(rules: &Rules, when: &str) {
    match interfaces::addresses() {
        Ok(addresses) => rules.shield_host(addresses),
        Err(e) => log::warn!("{when}: cannot read this host's interface addresses, the ones shielded so far stay: {e}"),
    }
}

/// Descriptors a session place may take: the client's socket, its target's (or a UDP
/// association's relay socket), one more for an association's outbound socket, and a
/// reclaimed client's socket still waiting for its worker.
const DESCRIPTORS_PER_PLACE: u64 = 4;
/// Descriptors for everything else: standard streams, listeners, logging, name lookup.
const DESCRIPTORS_RESERVED: u64 = 64;

/// The admission limits for `config`, after raising the descriptor limit toward what they
/// need; where the hard limit does not allow that, fewer places, so that a client past
/// them is refused by a close rather than left unanswered when `accept` fails.
fn admission_limits(config: &Config) -> admission::Limits {
    let limits = admission::Limits {
        workers: config.max_clients,
        queue: config.queue,
        per_address: config.max_clients_per_ip(),
        queue_wait: config.handshake_timeout,
    };
    let udp_services = config.services.iter().filter(|s| matches!(s, ServiceSpec::UdpForward(_))).count() as u64;
    let udp_sessions = udp_services.saturating_mul(config.udp_max_sessions as u64);
    let fixed = DESCRIPTORS_RESERVED.saturating_add(config.services.len() as u64).saturating_add(udp_sessions);
    let wanted = fixed.saturating_add(DESCRIPTORS_PER_PLACE.saturating_mul(limits.places() as u64));
    #[cfg(unix)]
    let limit = match crate::net::descriptors::raise_soft_limit(wanted) {
        Ok(raised) => {
            if raised.now > raised.before {
                log::info!(
                    "descriptor limit raised from {} to {} (hard limit {})",
                    raised.before,
                    raised.now,
                    raised.hard
                );
            }
            raised.now
        }
        Err(e) => {
            log::warn!("cannot read or raise the descriptor limit: {e}");
            return limits;
        }
    };
    #[cfg(not(unix))]
    let limit = wanted; // sockets are not counted against a per-process limit
    if limit >= wanted {
        return limits;
    }
    let affordable = limit.saturating_sub(fixed) / DESCRIPTORS_PER_PLACE;
    let fitted = limits.within(usize::try_from(affordable).unwrap_or(usize::MAX));
    log::warn!(
        "descriptors: --max-clients {} and --queue {} need about {wanted}, but the limit is {limit} \
         (raise the hard limit: ulimit -Hn, or LimitNOFILE= in a systemd unit); serving {} \
         sessions at once with {} waiting, closing clients past that",
        config.max_clients,
        config.queue,
        fitted.workers,
        fitted.queue
    );
    fitted
}

/// Starts the status listener's thread; returns its address.
fn start_status(ctx: &Arc<Context>, workers: &Arc<WorkerPool>, listener: TcpListener) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    log::info!("status pages on http://{addr}/sessions and /metrics");
    if !addr.ip().is_loopback() {
        log::warn!("--status {addr} is not loopback: anyone who reaches it sees every client, user and target");
    }
    let status = Status { ctx: Arc::clone(ctx), workers: Arc::clone(workers), started: std::time::SystemTime::now() };
    std::thread::Builder::new().name("burrowd-status".into()).spawn(move || status.run(listener))?;
    Ok(addr)
}

/// Tries the service's `--bind-out` addresses and `--interface` now, so one this host lacks
/// stops the start with a line naming it rather than failing every session.
fn check_egress(spec: &ServiceSpec) -> io::Result<()> {
    let (addr, egress) = (spec.listen_addr(), spec.egress());
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}, {egress}: {why}")));
    if let ServiceSpec::UdpForward(_) = spec
        && egress.bind == Some(BindOut::Same)
        && addr.ip().is_unspecified()
    {
        // A udp:// session's "same" is the service's own address, which a wildcard is not.
        return refuse("bind-out same on udp:// needs an address to listen on, not a wildcard".into());
    }
    match outbound::egress::probe(egress) {
        Ok(()) => Ok(()),
        Err(e) => refuse(e.to_string()),
    }
}

fn spec_summary(spec: &ServiceSpec) -> String {
    match spec {
        ServiceSpec::Socks(socks) => {
            let protocols = match (socks.socks5, socks.http) {
                (true, true) => "SOCKS and HTTP",
                (true, false) => "SOCKS",
                (false, _) => "HTTP",
            };
            if socks.users.require_login() {
                format!("{protocols}, {} user(s)", socks.users.count())
            } else {
                format!("{protocols}, no authentication")
            }
        }
        ServiceSpec::TcpForward(forward) => format!("forward to {}", forward.target),
        ServiceSpec::UdpForward(forward) => format!("udp forward to {}", forward.target),
    }
}

/// The address to connect to in order to wake a listener bound to `addr`.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
