//! Listeners, the accept loops, and the worker pool clients are handed to.

use crate::config::{Config, ServiceSpec};
use crate::connect::{self, ConnectError, Connected};
use crate::pool::{Refused, WorkerPool};
use crate::relay::Relayer;
use crate::session;
use crate::sockopt;
use crate::stats::{Snapshot, Stats};
use crate::wire::addr::TargetAddr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
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
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Opens the outbound connection for a request.
    pub fn connect_target(&self, target: &TargetAddr) -> Result<Connected, ConnectError> {
        connect::connect_direct(target, self.config.connect_timeout, &self.config.socket)
    }
}

/// A running server. Dropping it does not stop it; call [`Server::stop_accepting`].
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<(SocketAddr, JoinHandle<()>)>,
    stopping: Arc<AtomicBool>,
}

impl Server {
    /// Binds every listener, then starts serving. Fails, naming the address, if any
    /// listener cannot be bound.
    pub fn start(config: Config) -> io::Result<Server> {
        let mut bound = Vec::new();
        for spec in &config.services {
            let addr = spec.listen_addr();
            let listener =
                sockopt::listen(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            bound.push((listener, spec.clone()));
        }
        let relayer = Arc::new(Relayer::new(config.max_clients, config.buffer_size, config.idle_timeout));
        let workers = Arc::new(WorkerPool::new("burrowd-worker", config.max_clients, config.queue, WORKER_STACK));
        let stopping = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context {
            config,
            stats: Stats::default(),
            relayer,
            next_session: AtomicU64::new(1),
            stopping: Arc::clone(&stopping),
        });
        let mut listeners = Vec::new();
        for (listener, spec) in bound {
            let addr = listener.local_addr()?;
            log::info!("listening on {addr}: {}", spec_summary(&spec));
            let acceptor = Acceptor {
                ctx: Arc::clone(&ctx),
                workers: Arc::clone(&workers),
                stopping: Arc::clone(&stopping),
                spec: Arc::new(spec),
            };
            let thread =
                std::thread::Builder::new().name("burrowd-accept".into()).spawn(move || acceptor.run(listener))?;
            listeners.push((addr, thread));
        }
        Ok(Server { ctx, listeners, stopping })
    }

    /// The bound addresses, in the order the services were given (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(addr, _)| *addr).collect()
    }

    pub fn stats(&self) -> Snapshot {
        self.ctx.stats.snapshot()
    }

    /// Stops every accept loop and closes the listeners; sessions already accepted go on.
    pub fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for (addr, _) in &self.listeners {
            // A connection to ourselves is how a thread blocked in accept() learns to stop.
            let _ = TcpStream::connect_timeout(&wake_address(*addr), Duration::from_secs(1));
        }
        for (_, thread) in self.listeners.drain(..) {
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
        let id = self.ctx.next_session.fetch_add(1, Ordering::Relaxed);
        self.ctx.stats.session_queued();
        let (ctx, spec) = (Arc::clone(&self.ctx), Arc::clone(&self.spec));
        let job = Box::new(move || match &*spec {
            ServiceSpec::Socks(socks) => session::serve_socks(&ctx, socks, id, stream, peer),
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
struct FoldedWarning {
    last: Option<Instant>,
    count: u64,
}

impl FoldedWarning {
    fn warn(&mut self, message: impl FnOnce(u64) -> String) {
        self.count += 1;
        if self.last.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
            log::warn!("{}", message(self.count));
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}
