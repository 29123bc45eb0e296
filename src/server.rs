//! Listeners, the accept loops, and the worker pool clients are handed to.

use crate::chain::{self, UpstreamUdp};
use crate::config::{Config, ServiceSpec};
use crate::connect::{self, ConnectError, Connected};
use crate::forward_tcp;
use crate::forward_udp;
use crate::pool::{Refused, WorkerPool};
use crate::relay::Relayer;
use crate::reply::Failure;
use crate::session;
use crate::sockopt;
use crate::stats::{Snapshot, Stats};
use crate::wire::addr::TargetAddr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stack for session workers. They run the handshake and name resolution (getaddrinfo
/// and its NSS modules are the deepest callers) and then copy one relay direction.
pub const WORKER_STACK: usize = 256 * 1024;

/// How long the accept loop rests after running out of descriptors or memory, so that
/// it neither spins the CPU nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Repeated warnings of one kind are folded into one line per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// What every session shares.
pub struct Context {
    pub config: Config,
    pub stats: Stats,
    pub relayer: Arc<Relayer>,
    next_session: AtomicU64,
    /// Set when the server stops accepting. UDP associations, which have no end of their
    /// own, watch it and end then.
    stopping: Arc<AtomicBool>,
}

impl Context {
    /// The shared state for `config`, with the relay threads and buffers it asks for.
    pub(crate) fn new(config: Config, stopping: Arc<AtomicBool>) -> Self {
        let relayer = Arc::new(Relayer::new(config.max_clients, config.buffer_size, config.relay, config.idle_timeout));
        Context { config, stats: Stats::default(), relayer, next_session: AtomicU64::new(1), stopping }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Opens the outbound connection for a request: directly, or through the upstream chain.
    pub fn connect_target(&self, target: &TargetAddr) -> Result<Connected, ConnectError> {
        let config = &self.config;
        if config.chain.is_empty() {
            connect::connect_direct(target, config.connect_timeout, &config.socket)
        } else {
            chain::connect(&config.chain, target, config.connect_timeout, &config.socket)
        }
    }

    /// The UDP association with the upstream hop that UDP traffic goes through, or `None`
    /// without a chain. UDP takes one hop at most: a hop's UDP relay cannot be reached
    /// through a further hop, so with more the request is refused rather than sent around
    /// the chain.
    pub fn udp_upstream(&self) -> Result<Option<UpstreamUdp>, Failure> {
        let config = &self.config;
        match config.chain.len() {
            0 => Ok(None),
            1 => Ok(Some(chain::udp_associate(&config.chain, config.connect_timeout, &config.socket, &config.udp)?)),
            _ => Err(Failure::CommandNotSupported),
        }
    }

    /// A fresh id for a session's log line.
    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running server. Dropping it does not stop it; call [`Server::stop_accepting`].
pub struct Server {
    ctx: Arc<Context>,
    /// Every service's bound address, in the order the services were given.
    addrs: Vec<SocketAddr>,
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
    /// any cannot be bound, or if the config asks for what burrowd cannot do.
    pub fn start(config: Config) -> io::Result<Server> {
        config.check().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut bound = Vec::new();
        for spec in &config.services {
            let addr = spec.listen_addr();
            let socket = match spec {
                ServiceSpec::UdpForward(_) => sockopt::udp_bind(addr, &config.udp).map(Bound::Udp),
                _ => sockopt::listen(addr, &config.socket).map(Bound::Tcp),
            };
            let socket = socket.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            bound.push((socket, spec.clone()));
        }
        let workers = Arc::new(WorkerPool::new("burrowd-worker", config.max_clients, config.queue, WORKER_STACK));
        let stopping = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context::new(config, Arc::clone(&stopping)));
        let mut addrs = Vec::new();
        let mut accept_threads = Vec::new();
        for (socket, spec) in bound {
            match (socket, spec) {
                (Bound::Udp(socket), ServiceSpec::UdpForward(udp)) => {
                    let addr = socket.local_addr()?;
                    log::info!("listening on udp {addr}: forward to {} (ttl {:?})", udp.target, udp.ttl);
                    forward_udp::start(Arc::clone(&ctx), Arc::clone(&workers), udp, socket)?;
                    addrs.push(addr);
                }
                (Bound::Tcp(listener), spec) => {
                    let addr = listener.local_addr()?;
                    log::info!("listening on {addr}: {}", spec_summary(&spec));
                    let acceptor = Acceptor {
                        ctx: Arc::clone(&ctx),
                        workers: Arc::clone(&workers),
                        stopping: Arc::clone(&stopping),
                        spec: Arc::new(spec),
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
        for hop in &ctx.config.chain {
            log::info!("outbound connections go through {hop}");
        }
        if ctx.config.chain.len() > 1 {
            log::warn!("UDP ASSOCIATE is refused (reply 7): UDP goes through one upstream hop at most");
        }
        Ok(Server { ctx, addrs, accept_threads, stopping })
    }

    /// The bound addresses, in the order the services were given (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    pub fn stats(&self) -> Snapshot {
        self.ctx.stats.snapshot()
    }

    /// Stops every accept loop and closes the TCP listeners; a UDP service starts no new
    /// sessions. Sessions already started go on.
    pub fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for (addr, _) in &self.accept_threads {
            // A connection to ourselves is how a thread blocked in accept() learns to stop.
            let _ = TcpStream::connect_timeout(&wake_address(*addr), Duration::from_secs(1));
        }
        for (_, thread) in self.accept_threads.drain(..) {
            let _ = thread.join();
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

fn spec_summary(spec: &ServiceSpec) -> String {
    match spec {
        ServiceSpec::Socks(socks) if socks.users.is_empty() => "SOCKS, no authentication".into(),
        ServiceSpec::Socks(socks) => format!("SOCKS, {} user(s)", socks.users.len()),
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

/// One listener's accept loop.
struct Acceptor {
    ctx: Arc<Context>,
    workers: Arc<WorkerPool>,
    stopping: Arc<AtomicBool>,
    spec: Arc<ServiceSpec>,
}

impl Acceptor {
    fn run(self, listener: TcpListener) {
        let mut refusals = FoldedWarning::default();
        let mut errors = FoldedWarning::default();
        loop {
            let accepted = listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.dispatch(stream, peer, &mut refusals),
                Err(e) => {
                    let pause = accept_error_pause(&e);
                    errors.warn(|count| format!("accept on {:?}: {e} ({count} times)", listener.local_addr().ok()));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// Hands a client to the pool; all per-client work happens on the worker.
    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, refusals: &mut FoldedWarning) {
        let id = self.ctx.new_session_id();
        self.ctx.stats.session_queued();
        let (ctx, spec) = (Arc::clone(&self.ctx), Arc::clone(&self.spec));
        let job = Box::new(move || match &*spec {
            ServiceSpec::Socks(socks) => session::serve_socks(&ctx, socks, id, stream, peer),
            ServiceSpec::TcpForward(forward) => forward_tcp::serve(&ctx, forward, id, stream, peer),
            ServiceSpec::UdpForward(_) => unreachable!("UDP services have no accept loop"),
        });
        if let Err((job, why)) = self.workers.try_execute(job) {
            self.ctx.stats.session_refused();
            drop(job); // closes the client's socket
            let limits = (self.ctx.config.max_clients, self.ctx.config.queue);
            refusals.warn(|count| match why {
                Refused::Full => format!(
                    "refused {count} client(s), last {peer}: all {} workers busy and {} waiting",
                    limits.0, limits.1
                ),
                Refused::NoThread => format!("refused {count} client(s), last {peer}: cannot start a worker thread"),
            });
        }
    }
}

/// How long to pause after a failed accept: out of descriptors or memory needs time for
/// sessions to end; a client that gave up before we accepted needs none.
fn accept_error_pause(e: &io::Error) -> Duration {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {
            Duration::ZERO
        }
        _ => ACCEPT_BACKOFF,
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
