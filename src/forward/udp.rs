//! `udp://` port forwarding, one session per client address.
//!
//! One thread per service receives from every client. A client's first datagram starts
//! its session: a job on the service's own pool of session threads opens an outbound socket
//! of the client's own (so replies can only be the client's), sends what arrived meanwhile,
//! then carries replies back until the session has seen no datagram either way for the ttl.
//! Any number of replies may answer one request.
//!
//! Sessions are bounded per service (`--udp-max-sessions`) and per client address, and
//! their threads are the service's own: no UDP traffic can take the workers that SOCKS and
//! `tcp://` clients need. A datagram that would start a session past a bound is dropped.
//!
//! Without an upstream chain the outbound socket sends straight to the target and passes
//! back replies from any address: a broadcast target is answered by each host that heard
//! it. With upstream hops, the session holds a UDP association through the chain and the
//! datagrams carry its UDP ASSOCIATE headers.

use crate::config::rules::{Allowed, Cmd};
use crate::config::{Config, UdpForwardSpec};
use crate::net::is_timeout;
use crate::net::relay::{Activity, Meter};
use crate::net::udp_batch::{Batch, Outgoing, Toward};
use crate::net::worker_pool::{Refused, WorkerPool};
use crate::outbound::upstream::{UpstreamUdp, last_hop_header};
use crate::outbound::{self, Egress};
use crate::session::access::{Access, refused_at_accept};
use crate::session::live::Details;
use crate::session::report::FoldedWarning;
use crate::session::stats::Refusal;
use crate::session::{self, Context, End, Listed, SessionLog, State, UdpEnd};
use crate::wire::addr::TargetAddr;
use crate::wire::udp::{Header, MAX_HEADER_LEN};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often blocked receives wake to check the stop flag, session expiry and upstream
/// control connections.
const TICK: Duration = Duration::from_millis(200);
/// Datagrams held for a session while its outbound socket is being opened; more are dropped.
const MAX_PENDING: usize = 16;
/// Once the server stops, a session ends after this long without traffic (or its ttl, if
/// shorter): replies already on their way still arrive, and a drain need not wait a ttl.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Starts the receive thread of a `udp://` service on its bound socket. Once the server
/// stops accepting it starts no new session, sessions end after a short grace without
/// traffic, and the thread ends with the last one, so nobody needs to join it.
pub(crate) fn start(ctx: Arc<Context>, spec: UdpForwardSpec, socket: UdpSocket, stack_size: usize) -> io::Result<()> {
    socket.set_read_timeout(Some(TICK))?;
    let limits = SessionLimits::of(&ctx.config);
    // The session count is bounded before a job is made, so the pool never has to queue
    // more than the sessions whose threads are still finishing.
    let workers = WorkerPool::new("burrowd-udp-session", limits.total, limits.total, stack_size);
    let sessions = Mutex::new(Sessions { limits, ..Sessions::default() });
    let addr = socket.local_addr()?;
    // Room in front of each payload for the headers the chain puts there.
    let front = MAX_HEADER_LEN + UpstreamUdp::max_wrapping_len(ctx.config.chain.len());
    // `bind-out=same` is the service's own address (refused at start on a wildcard one).
    let egress = Egress::for_session(&spec.egress, addr);
    let service = Arc::new(Service { ctx, spec, socket, addr, sessions, front, egress });
    std::thread::Builder::new().name("burrowd-udp".into()).spawn(move || service.receive(&workers))?;
    Ok(())
}

/// How many sessions a `udp://` service keeps at once, in all and per client address.
#[derive(Debug, Default, Clone, Copy)]
struct SessionLimits {
    total: usize,
    per_address: usize,
}

impl SessionLimits {
    fn of(config: &Config) -> Self {
        SessionLimits { total: config.udp_max_sessions.max(1), per_address: config.udp_max_sessions_per_ip() }
    }
}

/// A service's live sessions by client address.
#[derive(Default)]
struct Sessions {
    limits: SessionLimits,
    by_client: HashMap<SocketAddr, Arc<Session>>,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a datagram could not start a session.
#[derive(Debug, Clone, Copy)]
enum Full {
    Service,
    Address,
}

impl Sessions {
    fn get(&self, client: &SocketAddr) -> Option<&Arc<Session>> {
        self.by_client.get(client)
    }

    fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Starts a session for `client` if the limits allow one more.
    fn start(&mut self, client: SocketAddr) -> Result<Arc<Session>, Full> {
        let of_address = self.per_address.get(&client.ip()).copied().unwrap_or(0);
        if self.by_client.len() >= self.limits.total {
            return Err(Full::Service);
        }
        if of_address >= self.limits.per_address {
            return Err(Full::Address);
        }
        let session = Arc::new(Session::new(client));
        self.by_client.insert(client, Arc::clone(&session));
        *self.per_address.entry(client.ip()).or_default() += 1;
        Ok(session)
    }

    /// Removes `session`, unless its client has a newer one.
    fn remove(&mut self, session: &Arc<Session>) {
        if self.by_client.get(&session.client).is_some_and(|s| Arc::ptr_eq(s, session)) {
            self.by_client.remove(&session.client);
            let ip = session.client.ip();
            if let Some(count) = self.per_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
    }
}

struct Service {
    ctx: Arc<Context>,
    spec: UdpForwardSpec,
    /// The listening socket: clients send to it, and their replies go out from it.
    socket: UdpSocket,
    /// Its bound address (its port resolved).
    addr: SocketAddr,
    sessions: Mutex<Sessions>,
    /// Where a payload starts in its batch slot: after room for the headers in front.
    front: usize,
    /// Where every session's outbound datagrams leave from.
    egress: Egress,
}

struct Session {
    client: SocketAddr,
    outbound: Mutex<Outbound>,
    /// When the last datagram moved either way, for the ttl.
    activity: Activity,
    up_bytes: AtomicU64,
    up_datagrams: AtomicU64,
    /// What the live list shows of its traffic.
    meter: Arc<Meter>,
    dropped: AtomicU64,
}

enum Outbound {
    /// Being opened; what the client sent meanwhile waits here.
    Opening(Vec<Vec<u8>>),
    Ready(Arc<Path>),
    /// Could not be opened, or the session is over.
    Closed,
}

/// Where a session's datagrams go.
enum Path {
    Direct { socket: UdpSocket, target: Allowed<SocketAddr> },
    Upstream { udp: UpstreamUdp, target: Allowed<TargetAddr> },
}

impl Service {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn receive(self: Arc<Self>, workers: &WorkerPool) {
        // Payloads land after room for a header, so an upstream header goes in front
        // without copying.
        let mut batch = Batch::new(self.front);
        let mut errors = FoldedWarning::default();
        let mut refusals = FoldedWarning::default();
        loop {
            let stop = self.ctx.is_stopping();
            if stop && self.sessions().is_empty() {
                return;
            }
            match batch.recv(&self.socket) {
                Ok(count) => {
                    for i in 0..count {
                        let (datagram, client) = batch.datagram(i);
                        let len = datagram.len();
                        self.from_client(client, batch.slot_mut(i), len, stop, workers, &mut refusals);
                    }
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    errors.warn(|count| format!("udp receive on {}: {e} ({count} times)", self.spec.addr));
                    std::thread::sleep(TICK);
                }
            }
        }
    }

    fn from_client(
        self: &Arc<Self>,
        client: SocketAddr,
        buf: &mut [u8],
        len: usize,
        stopping: bool,
        workers: &WorkerPool,
        refusals: &mut FoldedWarning,
    ) {
        let session = {
            let mut sessions = self.sessions();
            match sessions.get(&client) {
                Some(session) => {
                    session.touch();
                    Arc::clone(session)
                }
                None if stopping => return,
                None => {
                    if let Some(denied) = refused_at_accept(&self.ctx.config.rules.current(), client.ip()) {
                        drop(sessions);
                        self.ctx.stats.client_refused(Refusal::Rule);
                        refusals.warn(|count| {
                            format!("udp {}: dropped {count} datagram(s), last from {client}: {denied}", self.spec.addr)
                        });
                        return;
                    }
                    match sessions.start(client) {
                        Ok(session) => {
                            drop(sessions);
                            session.send_up(buf, self.front, len);
                            self.begin(session, workers, refusals);
                            return;
                        }
                        Err(full) => {
                            drop(sessions);
                            self.ctx.stats.client_refused(match full {
                                Full::Service => Refusal::PoolFull,
                                Full::Address => Refusal::AddressLimit,
                            });
                            let limits = SessionLimits::of(&self.ctx.config);
                            refusals.warn(|count| match full {
                                Full::Service => format!(
                                    "udp {}: dropped {count} datagram(s) starting a session, last from {client}: \
                                     all {} sessions taken (--udp-max-sessions)",
                                    self.spec.addr, limits.total
                                ),
                                Full::Address => format!(
                                    "udp {}: dropped {count} datagram(s) starting a session, last from {client}: \
                                     its address holds {} sessions (--udp-max-sessions-per-ip)",
                                    self.spec.addr, limits.per_address
                                ),
                            });
                            return;
                        }
                    }
                }
            }
        };
        session.send_up(buf, self.front, len);
    }

    /// Hands a new session to the pool, or forgets it when no thread can be had.
    fn begin(self: &Arc<Self>, session: Arc<Session>, workers: &WorkerPool, refusals: &mut FoldedWarning) {
        let listed = self.ctx.list_session(session.client, None, self.addr, Arc::clone(&session.meter));
        self.ctx.stats.session_queued();
        let (service, job_session) = (Arc::clone(self), Arc::clone(&session));
        let job = Box::new(move || service.run_session(listed, &job_session));
        if let Err((job, why)) = workers.try_execute(job) {
            drop(job);
            self.forget(&session);
            self.ctx.stats.session_refused(Refusal::PoolFull);
            refusals.warn(|count| match why {
                Refused::Full => {
                    format!("refused {count} UDP client(s), last {}: all session threads busy", session.client)
                }
                Refused::NoThread => {
                    format!("refused {count} UDP client(s), last {}: cannot start a session thread", session.client)
                }
            });
        }
    }

    fn forget(&self, session: &Arc<Session>) {
        self.sessions().remove(session);
        // Datagrams still waiting for a path that never opened are lost: count them.
        if let Outbound::Opening(pending) = std::mem::replace(&mut *session.outbound(), Outbound::Closed) {
            session.dropped.fetch_add(pending.len() as u64, Ordering::Relaxed);
        }
    }

    /// Ends the session if it has been idle for `limit`, under the lock the receive thread
    /// takes to find it, so a datagram either counts as traffic or starts a new session.
    fn forget_if_idle(&self, session: &Arc<Session>, limit: Duration) -> bool {
        let mut sessions = self.sessions();
        if session.idle_for() < limit {
            return false;
        }
        sessions.remove(session);
        true
    }

    fn run_session(&self, listed: Listed, session: &Arc<Session>) {
        session::logged(&self.ctx, listed, |log| {
            log.command = Some("UDP-FORWARD".into());
            log.target = Some(self.spec.target.clone());
            let mut down_datagrams = 0u64;
            let end = self.forward_replies(session, log, &mut down_datagrams);
            self.forget(session);
            log.up = session.up_bytes.load(Ordering::Relaxed);
            let up_datagrams = session.up_datagrams.load(Ordering::Relaxed);
            self.ctx.stats.udp_forwarded(up_datagrams, down_datagrams, session.dropped.load(Ordering::Relaxed));
            log.end = Some(End::UdpForward {
                up: up_datagrams,
                down: down_datagrams,
                dropped: session.dropped.load(Ordering::Relaxed),
                end,
            });
        });
    }

    /// Opens the outbound path, then copies replies to the client until the session ends;
    /// returns why it ended.
    fn forward_replies(&self, session: &Arc<Session>, log: &mut SessionLog, down_datagrams: &mut u64) -> UdpEnd {
        let path = match self.open_path(session.client) {
            Ok(path) => Arc::new(path),
            Err(e) => return UdpEnd::Unopened(e),
        };
        log.reached = Some(path.reached());
        log.outbound_local = path.local_addr().ok();
        if let Some(live) = &log.live {
            // Its legs are UDP, but for the TCP connection a hop's association lives on.
            let control_leg = match &*path {
                Path::Upstream { udp, .. } => udp.control_leg(),
                Path::Direct { .. } => None,
            };
            let (command, target) = (log.command.clone(), log.target.as_ref().map(ToString::to_string));
            live.update(|details| {
                *details =
                    Details { state: State::Udp, user: None, command, target, outbound: control_leg, carried: None };
            });
        }
        if let Err(e) = path.set_read_timeout(self.spec.ttl.min(TICK)) {
            return UdpEnd::Unopened(format!("cannot set read timeout: {e}"));
        }
        let mut batch = Batch::new(self.front);
        session.ready(&path, batch.slot_mut(0), self.front);
        let mut out = Vec::new();
        loop {
            match batch.recv(path.socket()) {
                Ok(count) => {
                    for i in 0..count {
                        match path.payload(batch.datagram(i).0) {
                            Some(payload) => {
                                let range = self.front + payload.start..self.front + payload.end;
                                out.push(Outgoing { slot: i, range, to: Toward::Client(session.client), note: () });
                            }
                            None => session.count_drop(),
                        }
                    }
                    batch.send(&self.socket, &out, |reply, sent| match sent {
                        Ok(()) => {
                            session.touch();
                            log.down += reply.range.len() as u64;
                            session.meter.count_moved(0, reply.range.len() as u64);
                            *down_datagrams += 1;
                        }
                        Err(_) => session.count_drop(),
                    });
                    out.clear();
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if path.upstream_closed() {
                        return UdpEnd::UpstreamEnded;
                    }
                    if self.ctx.is_stopping() && self.forget_if_idle(session, self.spec.ttl.min(STOP_GRACE)) {
                        return UdpEnd::Shutdown;
                    }
                    if self.forget_if_idle(session, self.spec.ttl) {
                        return UdpEnd::IdleTimeout(self.spec.ttl);
                    }
                }
                Err(e) => return UdpEnd::OutboundFailed(e),
            }
        }
    }

    /// A socket straight to the target, or a UDP association through the upstream chain,
    /// for `client` as the rules allow it (who may use the forward, not where it goes).
    fn open_path(&self, client: SocketAddr) -> Result<Path, String> {
        let config = &self.ctx.config;
        let access = Access::for_forward(config.rules.current(), client.ip(), config.chain.is_empty());
        let target = &self.spec.target;
        if let Some(udp) = self.ctx.udp_upstream(&self.egress).map_err(|e| e.to_string())? {
            for control in &udp.controls {
                control.set_nonblocking(true).map_err(|e| format!("upstream control connection: {e}"))?;
            }
            let target = access.permit_upstream_owned(Cmd::Udp, target).map_err(|denied| denied.to_string())?;
            return Ok(Path::Upstream { udp, target });
        }
        let resolved = outbound::resolve(target).and_then(|addrs| self.egress.reachable(addrs));
        let resolved = resolved.map_err(|e| e.to_string())?;
        let first = *resolved.first().expect("resolve returns at least one address");
        let target = access.permit_address(Cmd::Udp, target.as_addr(), first).map_err(|denied| denied.to_string())?;
        let socket = self
            .egress
            .udp_socket(first.is_ipv6(), &config.udp)
            .map_err(|e| format!("cannot open outbound socket: {e}"))?;
        Ok(Path::Direct { socket, target })
    }
}

impl Session {
    fn new(client: SocketAddr) -> Self {
        Session {
            client,
            outbound: Mutex::new(Outbound::Opening(Vec::new())),
            activity: Activity::new(),
            up_bytes: AtomicU64::new(0),
            up_datagrams: AtomicU64::new(0),
            meter: Arc::default(),
            dropped: AtomicU64::new(0),
        }
    }

    fn outbound(&self) -> MutexGuard<'_, Outbound> {
        self.outbound.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn touch(&self) {
        self.activity.touch();
    }

    fn idle_for(&self) -> Duration {
        self.activity.idle_for()
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends the client's datagram at `buf[at..][..len]` on, or holds it while the path is
    /// being opened.
    fn send_up(&self, buf: &mut [u8], at: usize, len: usize) {
        let mut outbound = self.outbound();
        let path = match &mut *outbound {
            Outbound::Ready(path) => Arc::clone(path),
            Outbound::Opening(pending) if pending.len() < MAX_PENDING => {
                pending.push(buf[at..][..len].to_vec());
                return;
            }
            Outbound::Opening(_) | Outbound::Closed => return self.count_drop(),
        };
        drop(outbound);
        self.send_on(&path, buf, at, len);
    }

    fn send_on(&self, path: &Path, buf: &mut [u8], at: usize, len: usize) {
        match path.send(buf, at, len) {
            Ok(()) => {
                self.up_bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.meter.count_moved(len as u64, 0);
                self.up_datagrams.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::debug!("udp forward from {}: send failed: {e}", self.client);
                self.count_drop();
            }
        }
    }

    /// Sends what waited while the path was opened, then lets datagrams go straight on.
    /// Both happen under the lock so nothing overtakes the waiting datagrams.
    fn ready(&self, path: &Arc<Path>, buf: &mut [u8], at: usize) {
        let mut outbound = self.outbound();
        if let Outbound::Opening(pending) = &mut *outbound {
            for datagram in pending.drain(..) {
                buf[at..][..datagram.len()].copy_from_slice(&datagram);
                self.send_on(path, buf, at, datagram.len());
            }
            *outbound = Outbound::Ready(Arc::clone(path));
        }
    }
}

impl Path {
    /// Sends the payload at `buf[at..][..len]`; the room in front takes the UDP ASSOCIATE
    /// headers when there are any.
    fn send(&self, buf: &mut [u8], at: usize, len: usize) -> io::Result<()> {
        match self {
            Path::Direct { socket, target } => socket.send_to(&buf[at..][..len], *target.get()).map(drop),
            Path::Upstream { udp, target } => {
                let header = Header { frag: 0, addr: target.get().as_addr() };
                let start = at - header.encoded_len();
                header.emit(&mut buf[start..]);
                let start = udp.wrap(buf, start);
                udp.socket.send(&buf[start..at + len]).map(drop)
            }
        }
    }

    /// Where the payload of a reply is in `datagram`, or `None` for a datagram to drop (a
    /// malformed or fragmented one from the upstream relay).
    fn payload(&self, datagram: &[u8]) -> Option<Range<usize>> {
        match self {
            Path::Direct { .. } => Some(0..datagram.len()),
            Path::Upstream { udp, .. } => {
                last_hop_header(datagram, udp.outer_headers()).map(|(_, payload)| payload..datagram.len())
            }
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.socket().set_read_timeout(Some(timeout))
    }

    fn socket(&self) -> &UdpSocket {
        match self {
            Path::Direct { socket, .. } => socket,
            Path::Upstream { udp, .. } => &udp.socket,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    /// Where datagrams are sent: the target, or the upstream hop's relay.
    fn reached(&self) -> SocketAddr {
        match self {
            Path::Direct { target, .. } => *target.get(),
            Path::Upstream { udp, .. } => udp.relay,
        }
    }

    /// Whether a hop closed the TCP connection its association lives on.
    fn upstream_closed(&self) -> bool {
        let Path::Upstream { udp, .. } = self else {
            return false;
        };
        let mut probe = [0u8; 1];
        udp.controls.iter().any(|control| match control.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e) && e.kind() != io::ErrorKind::Interrupted,
        })
    }
}
