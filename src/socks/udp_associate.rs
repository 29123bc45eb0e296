//! UDP ASSOCIATE (RFC 1928 §7): one association's datagram relay, for exactly as long as
//! its TCP control connection lives.
//!
//! An association has up to three sockets: the relay socket the client sends to, bound to
//! the address the client reached us on, and one outbound socket per address family that
//! sends to targets and hears their replies. Because client traffic and target traffic
//! arrive on different sockets, the socket says which way a datagram goes, even when the
//! client and a target share 127.0.0.1.
//!
//! The session's worker reads the relay socket (client → target) and watches the control
//! connection; each outbound socket gets a thread from the relay pool that reads replies
//! (target → client). Every read has a short timeout, so all threads notice within a tick
//! when the control connection closes, the association sits idle too long, or the server
//! shuts down. Each thread moves datagrams in batches (`net::udp_batch`: on Linux, one system
//! call receives every datagram already queued, another sends them all on) and owns its
//! batch's buffer, so relaying allocates nothing while traffic flows; an idle thread's
//! buffer shrinks back to one datagram's worth.
//!
//! With upstream hops (`-F`), the association holds UDP associations of its own through
//! the chain instead of outbound sockets: datagrams go to the first hop's relay as they
//! came, header and all (the last hop resolves names and reaches targets), behind one more
//! header for each hop in between; the last hop's datagrams, already labelled with their
//! source, come back the same way and lose the outer headers here.

use crate::config::UdpOptions;
use crate::config::rules::Cmd;
use crate::net::is_timeout;
use crate::net::relay::{Activity, Meter};
use crate::net::sockopt;
use crate::net::udp_batch::{Batch, Outgoing, Toward};
use crate::outbound::upstream::{UpstreamUdp, last_hop_header};
use crate::outbound::{self, ConnectError, Egress};
use crate::session::access::{Access, Denied};
use crate::session::report::{Dropped, Traffic, UdpCounts};
use crate::session::{Context, UdpEnd};
use crate::wire::addr::{Addr, TargetAddr};
use crate::wire::udp::{Header, MAX_IP_HEADER_LEN};
use crossbeam_channel::{Receiver, Sender};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often each thread of an association looks up from its socket to see whether the
/// association is over; it bounds how long teardown takes.
const TICK: Duration = Duration::from_millis(200);
/// Domain names an association remembers, and for how long: enough for a client talking
/// to a few servers by name without a lookup per datagram, short enough to follow DNS.
const NAME_CACHE_SIZE: usize = 16;
const NAME_TTL: Duration = Duration::from_secs(60);
/// Bytes read and thrown away per check from a client that talks on its control
/// connection, where it has nothing to say.
const CONTROL_SINK: usize = 4096;

/// A relay socket opened for one client, not yet relaying.
pub(super) struct Association {
    relay: Arc<UdpSocket>,
    /// The IP of the client's control connection; datagrams from any other are dropped.
    client_ip: IpAddr,
    /// The port the request's DST named, if it named the client's own address with one.
    client_port: Option<u16>,
    advertised: SocketAddr,
    /// The session's number, for the log.
    session: u64,
    upstream: Option<UpstreamUdp>,
    access: Access,
    egress: Egress,
}

pub(super) struct UdpOutcome {
    pub counts: UdpCounts,
    pub end: UdpEnd,
}

impl Association {
    /// Opens the relay socket for the client on `control`. `requested` is the request's
    /// DST: where the client says it will send from (all zeros when it does not know).
    /// With `upstream`, datagrams go through that association with an upstream hop; without,
    /// they leave for targets as `egress` says.
    ///
    /// Datagrams are taken from the client's IP only. DST fixes the port too when it names
    /// that IP with a port; otherwise the client's first datagram does. Widely used clients
    /// (V2Ray's and Xray's socks outbound, gost, hysteria, tun2socks) put the target, or a
    /// port of their own choosing, in DST and then send from another port: DST alone would
    /// lock them out.
    pub(super) fn open(
        ctx: &Context,
        control: &TcpStream,
        requested: &TargetAddr,
        session: u64,
        upstream: Option<UpstreamUdp>,
        access: &Access,
        egress: &Egress,
    ) -> io::Result<Self> {
        // An IPv4 client on a dual-stack listener shows up as ::ffff:a.b.c.d; the relay
        // socket and the client check both want the plain IPv4 form.
        let mut local = control.local_addr()?;
        local.set_ip(local.ip().to_canonical());
        // The client's address as the rules know it: the control connection's peer, or
        // behind a load balancer the client its PROXY header named, whose datagrams come
        // here directly.
        let client_ip = access.client().to_canonical();
        let udp = &ctx.config.udp;
        let relay = bind_relay(local, udp, session)?;
        relay.set_read_timeout(Some(TICK))?;
        let advertised = SocketAddr::new(udp.advertise.unwrap_or(local.ip()), relay.local_addr()?.port());
        let client_port = match requested {
            TargetAddr::Ip(named) if named.ip().to_canonical() == client_ip && named.port() != 0 => Some(named.port()),
            _ => None,
        };
        if let Some(upstream) = &upstream {
            for control in &upstream.controls {
                control.set_nonblocking(true)?;
            }
            upstream.socket.set_read_timeout(Some(TICK))?;
        }
        let (access, egress) = (access.clone(), egress.clone());
        Ok(Association {
            relay: Arc::new(relay),
            client_ip,
            client_port,
            advertised,
            session,
            upstream,
            access,
            egress,
        })
    }

    /// The address for the UDP ASSOCIATE reply: where the client must send its datagrams.
    pub(super) fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Relays until the control connection closes, the association idles out or the
    /// server shuts down; every thread has ended and every socket is closed on return.
    /// `meter` shows its payload bytes each way to the live list as they move.
    pub(super) fn run(self, ctx: &Arc<Context>, control: TcpStream, meter: Arc<Meter>) -> UdpOutcome {
        let relay_addr = self.relay.local_addr().unwrap_or(self.advertised);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut client_side = ClientSide {
            ctx: Arc::clone(ctx),
            relay: self.relay,
            client_ip: self.client_ip,
            client_port: self.client_port,
            session: self.session,
            shared: Arc::new(Shared { stop: AtomicBool::new(false), activity: Activity::new(), meter }),
            outbound: [None, None],
            upstream: self.upstream,
            upstream_replies: false,
            names: NameCache::default(),
            access: self.access,
            egress: self.egress,
            traffic: Traffic::default(),
            dropped: Dropped::default(),
            replies_started: 0,
            done: done_tx,
        };
        let end = client_side.serve(&control);
        drop(control);
        client_side.shared.stop.store(true, Ordering::SeqCst);
        let (down, lost) = client_side.collect_replies(&done_rx);
        let client = client_side.client_port.map(|port| SocketAddr::new(client_side.client_ip, port));
        let dropped = Dropped { unsendable: client_side.dropped.unsendable + lost, ..client_side.dropped };
        UdpOutcome { counts: UdpCounts { relay: relay_addr, client, up: client_side.traffic, down, dropped }, end }
    }
}

/// Binds the relay socket on `local`'s address (an IPv6 scope included), on any port or on a
/// free one from the configured range.
fn bind_relay(mut local: SocketAddr, opts: &UdpOptions, session: u64) -> io::Result<UdpSocket> {
    let Some(range) = &opts.port_range else {
        local.set_port(0);
        return sockopt::udp_bind(local, opts);
    };
    let (first, count) = (u64::from(*range.start()), u64::from(*range.end() - *range.start()) + 1);
    for i in 0..count {
        // Each association starts at a different port, so they do not all try the same
        // taken ones first.
        let port = (first + (session.wrapping_add(i)) % count) as u16;
        local.set_port(port);
        match sockopt::udp_bind(local, opts) {
            Ok(socket) => return Ok(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("every UDP port in {}-{} on {} is taken", range.start(), range.end(), local.ip()),
    ))
}

/// Opens the socket that sends to targets of one address family (and hears their
/// replies). It is bound where `egress` says, by default to the wildcard address so routing
/// picks the source, and carries SO_BROADCAST (IPv4) so broadcast targets are served.
fn open_outbound(ipv6: bool, egress: &Egress, opts: &UdpOptions) -> io::Result<UdpSocket> {
    let socket = egress.udp_socket(ipv6, opts)?;
    socket.set_read_timeout(Some(TICK))?;
    Ok(socket)
}

/// Which socket a datagram from the client leaves by.
#[derive(Clone, Copy)]
enum Route {
    Ipv4,
    Ipv6,
    Upstream,
}

/// What the threads of one association share.
struct Shared {
    stop: AtomicBool,
    activity: Activity,
    meter: Arc<Meter>,
}

/// The worker's half: datagrams from the client to targets, and the watch on the
/// control connection.
struct ClientSide {
    ctx: Arc<Context>,
    relay: Arc<UdpSocket>,
    client_ip: IpAddr,
    /// Named in the request, or fixed by the client's first datagram.
    client_port: Option<u16>,
    /// The session's number, for the log.
    session: u64,
    shared: Arc<Shared>,
    /// Outbound sockets, IPv4 then IPv6, opened on the first datagram to that family.
    outbound: [Option<Arc<UdpSocket>>; 2],
    /// The association with the upstream hop, used instead of outbound sockets.
    upstream: Option<UpstreamUdp>,
    /// Whether the thread for the upstream hop's datagrams has started.
    upstream_replies: bool,
    names: NameCache,
    /// Judges each datagram's target.
    access: Access,
    /// Where datagrams to targets leave from, and which families they may be sent over.
    egress: Egress,
    traffic: Traffic,
    dropped: Dropped,
    replies_started: usize,
    done: Sender<(Traffic, u64)>,
}

impl ClientSide {
    fn serve(&mut self, control: &TcpStream) -> UdpEnd {
        if let Err(e) = control.set_nonblocking(true) {
            return UdpEnd::ControlFailed(e);
        }
        // Room in front of each datagram for the headers of the hops between the first
        // and the last.
        let front = self.upstream.as_ref().map_or(0, UpstreamUdp::wrapping_len);
        let mut batch = Batch::new(front);
        // What a batch sends, by socket: IPv4 outbound, IPv6 outbound, the upstream hop.
        let mut out: [Vec<Outgoing<usize>>; 3] = Default::default();
        let mut next_check = Instant::now() + TICK;
        loop {
            match batch.recv(&self.relay) {
                Ok(count) => {
                    for i in 0..count {
                        let (datagram, from) = batch.datagram(i);
                        if let Some((route, mut outgoing)) = self.forward(i, datagram, from) {
                            outgoing.range = front + outgoing.range.start..front + outgoing.range.end;
                            if let (Route::Upstream, Some(upstream)) = (route, &self.upstream) {
                                outgoing.range.start = upstream.wrap(batch.slot_mut(i), front);
                            }
                            out[route as usize].push(outgoing);
                        }
                    }
                    self.send(&mut batch, &mut out);
                }
                Err(e) if is_timeout(&e) || is_transient(&e) => {}
                Err(e) => return UdpEnd::RelayFailed(e),
            }
            // Checked on a timer rather than per datagram, so a busy association pays
            // for the checks once a tick.
            let now = Instant::now();
            if now >= next_check {
                if let Some(end) = self.end_reason(control) {
                    return end;
                }
                next_check = now + TICK;
            }
        }
    }

    fn end_reason(&self, control: &TcpStream) -> Option<UdpEnd> {
        if self.ctx.is_stopping() {
            return Some(UdpEnd::Shutdown);
        }
        if let Some(end) = control_ended(control) {
            return Some(end);
        }
        if self.upstream.as_ref().is_some_and(|upstream| upstream.controls.iter().any(|c| control_ended(c).is_some())) {
            return Some(UdpEnd::UpstreamEnded);
        }
        match self.ctx.config.udp.idle_timeout {
            Some(limit) if self.shared.activity.idle_for() >= limit => Some(UdpEnd::IdleTimeout(limit)),
            _ => None,
        }
    }

    /// Checks the datagram in slot `slot` of a batch from the relay socket and says where
    /// its payload goes, or drops and counts it.
    fn forward(&mut self, slot: usize, datagram: &[u8], from: SocketAddr) -> Option<(Route, Outgoing<usize>)> {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if from.ip() != self.client_ip || self.client_port.is_some_and(|port| port != from.port()) {
            return self.foreign(from);
        }
        let (header, payload_at) = match Header::parse(datagram) {
            Ok(parsed) => parsed,
            Err(_) => {
                self.dropped.malformed += 1;
                return None;
            }
        };
        if header.frag != 0 {
            self.dropped.fragmented += 1;
            return None;
        }
        let client_port = *self.client_port.get_or_insert(from.port());
        let client = SocketAddr::new(self.client_ip, client_port);
        let payload_len = datagram.len() - payload_at;
        // What the target's name or port decide is refused before any lookup.
        if let Err(denied) = self.access.check_target(Cmd::Udp, header.addr) {
            return self.denied(from, header.addr, &denied);
        }
        if let Some(upstream) = self.upstream.as_ref().map(|upstream| Arc::clone(&upstream.socket)) {
            // Sent on as it is, a name resolved upstream: decided without its address.
            if let Err(denied) = self.access.permit_upstream(Cmd::Udp, header.addr) {
                return self.denied(from, header.addr, &denied);
            }
            if let Err(e) = self.upstream_replies(&upstream, client) {
                return self.unsendable(from, header.addr, e);
            }
            let whole = Outgoing { slot, range: 0..datagram.len(), to: Toward::Connected, note: payload_len };
            return Some((Route::Upstream, whole));
        }
        let target = match header.addr {
            // A v4-mapped target goes out of the IPv4 socket like any IPv4 target.
            Addr::Ip(target) => SocketAddr::new(target.ip().to_canonical(), target.port()),
            Addr::Domain(name, port) => match self.names.resolve(name, port, self.client_ip.is_ipv6(), &self.egress) {
                Ok(target) => target,
                Err(e) => {
                    log::debug!("udp datagram from {from} dropped: {e}");
                    self.dropped.unsendable += 1;
                    return None;
                }
            },
        };
        // The name is judged as asked, the address as sent to.
        let target = match self.access.permit_address(Cmd::Udp, header.addr, target) {
            Ok(target) => target,
            Err(denied) => return self.denied(from, header.addr, &denied),
        };
        let (ipv6, range) = (target.get().is_ipv6(), payload_at..datagram.len());
        // A target of a family --bind-out leaves out is not sent to at all.
        if let Err(e) = self.egress.source(ipv6).and_then(|_| self.outbound(ipv6, client)) {
            return self.unsendable(from, Addr::Ip(*target.get()), e);
        }
        let route = if ipv6 { Route::Ipv6 } else { Route::Ipv4 };
        Some((route, Outgoing { slot, range, to: Toward::Target(target), note: payload_len }))
    }

    /// Drops a datagram that is not the client's; the first of an association is logged,
    /// so whoever wonders why a client is not served sees where its datagrams come from.
    fn foreign<T>(&mut self, from: SocketAddr) -> Option<T> {
        if self.dropped.foreign == 0 {
            let client = match self.client_port {
                Some(port) => SocketAddr::new(self.client_ip, port).to_string(),
                None => self.client_ip.to_string(),
            };
            log::info!(
                "session {} udp: dropped a datagram from {from}, not the client ({client}); \
                 further foreign datagrams are only counted",
                self.session
            );
        }
        self.dropped.foreign += 1;
        None
    }

    fn denied<T>(&mut self, from: SocketAddr, target: Addr<'_>, denied: &Denied) -> Option<T> {
        log::debug!("udp datagram from {from} to {target} dropped: {denied}");
        self.dropped.denied += 1;
        None
    }

    fn unsendable<T>(&mut self, from: SocketAddr, target: Addr<'_>, e: io::Error) -> Option<T> {
        log::debug!("udp datagram from {from} to {target} not sent: {e}");
        self.dropped.unsendable += 1;
        None
    }

    /// Sends what a batch routed, each socket's datagrams in one go, and counts them;
    /// empties `out`.
    fn send(&mut self, batch: &mut Batch, out: &mut [Vec<Outgoing<usize>>; 3]) {
        let (before, bytes_before) = (self.traffic.datagrams, self.traffic.bytes);
        for (route, queued) in [Route::Ipv4, Route::Ipv6, Route::Upstream].into_iter().zip(out.iter_mut()) {
            if queued.is_empty() {
                continue;
            }
            let socket = match route {
                Route::Ipv4 => self.outbound[0].clone(),
                Route::Ipv6 => self.outbound[1].clone(),
                Route::Upstream => self.upstream.as_ref().map(|upstream| Arc::clone(&upstream.socket)),
            };
            let socket = socket.expect("forward routes only to a socket it has");
            batch.send(&socket, queued, |datagram, sent| match sent {
                Ok(()) => {
                    self.traffic.datagrams += 1;
                    self.traffic.bytes += datagram.note as u64;
                }
                Err(e) => {
                    let to = match datagram.to {
                        Toward::Target(target) => target.get().to_string(),
                        Toward::Client(_) | Toward::Connected => "the upstream hop".to_owned(),
                    };
                    log::debug!("udp datagram from the client to {to} not sent: {e}");
                    self.dropped.unsendable += 1;
                }
            });
            queued.clear();
        }
        if self.traffic.datagrams != before {
            self.shared.activity.touch();
            self.shared.meter.count_moved(self.traffic.bytes - bytes_before, 0);
        }
    }

    /// Starts, on first use, the thread that passes the upstream hop's datagrams to `client`.
    fn upstream_replies(&mut self, upstream: &Arc<UdpSocket>, client: SocketAddr) -> io::Result<()> {
        if !self.upstream_replies {
            let outer = self.upstream.as_ref().map_or(0, UpstreamUdp::outer_headers);
            self.start_replies(Arc::clone(upstream), client, Some(outer))?;
            self.upstream_replies = true;
        }
        Ok(())
    }

    /// Makes sure the outbound socket for a family is open; the first use opens it and
    /// starts the thread that passes its replies back to `client`.
    fn outbound(&mut self, ipv6: bool, client: SocketAddr) -> io::Result<()> {
        let slot = usize::from(ipv6);
        if self.outbound[slot].is_none() {
            let socket = Arc::new(open_outbound(ipv6, &self.egress, &self.ctx.config.udp)?);
            self.start_replies(Arc::clone(&socket), client, None)?;
            self.outbound[slot] = Some(socket);
        }
        Ok(())
    }

    /// Starts a thread passing datagrams that arrive on `from` back to `client`.
    fn start_replies(&mut self, from: Arc<UdpSocket>, client: SocketAddr, labelled: Option<usize>) -> io::Result<()> {
        let replies =
            TargetReplies { from, relay: Arc::clone(&self.relay), client, shared: Arc::clone(&self.shared), labelled };
        let done = self.done.clone();
        self.ctx
            .relayer
            .run_beside(Box::new(move || {
                let _ = done.send(replies.run());
            }))
            .map_err(|why| io::Error::other(format!("no relay thread for replies ({why:?})")))?;
        self.replies_started += 1;
        Ok(())
    }

    /// Waits for the reply threads, which see the stop flag within a tick; returns what
    /// they relayed and how many replies they could not deliver.
    fn collect_replies(&mut self, done: &Receiver<(Traffic, u64)>) -> (Traffic, u64) {
        // The reply threads hold the other references: each socket closes as its thread ends.
        self.outbound = [None, None];
        self.upstream = None;
        let (mut down, mut lost) = (Traffic::default(), 0);
        for _ in 0..self.replies_started {
            match done.recv_timeout(TICK * 10) {
                Ok((traffic, undelivered)) => {
                    down.datagrams += traffic.datagrams;
                    down.bytes += traffic.bytes;
                    lost += undelivered;
                }
                Err(_) => {
                    log::warn!("udp reply thread did not stop in time");
                    break;
                }
            }
        }
        (down, lost)
    }
}

/// Whether the control connection has ended. The client has nothing to say on it after
/// the reply, so whatever it sends is read and dropped.
fn control_ended(control: &TcpStream) -> Option<UdpEnd> {
    let mut sink = [0u8; 512];
    let mut budget = CONTROL_SINK;
    while budget > 0 {
        match (&*control).read(&mut sink) {
            Ok(0) => return Some(UdpEnd::ControlClosed),
            Ok(n) => budget = budget.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(UdpEnd::ControlFailed(e)),
        }
    }
    None
}

/// Errors a UDP socket may report that say nothing about the socket itself: an
/// interrupted call, or an ICMP error some systems attach to the next read.
fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset)
}

/// A reply thread: datagrams from targets on one outbound socket, back to the client
/// with the target's address in front.
struct TargetReplies {
    from: Arc<UdpSocket>,
    relay: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
    /// Datagrams arrive from the first upstream hop's relay with the last hop's UDP
    /// ASSOCIATE header already, behind this many headers of the hops in between; those
    /// are taken off, and the rest passes on once checked.
    labelled: Option<usize>,
}

impl TargetReplies {
    /// Relays until the stop flag is set; returns what went through and how many
    /// replies could not be sent to the client.
    fn run(self) -> (Traffic, u64) {
        // Each payload is received behind room for the longest IP header, and the header
        // is then written just in front of it: no copy.
        let mut batch = Batch::new(MAX_IP_HEADER_LEN);
        let mut out = Vec::new();
        let (mut traffic, mut lost) = (Traffic::default(), 0);
        while !self.shared.stop.load(Ordering::SeqCst) {
            let count = match batch.recv(&self.from) {
                Ok(count) => count,
                Err(e) if is_timeout(&e) || is_transient(&e) => continue,
                Err(e) => {
                    log::warn!("udp replies for {} end: {e}", self.client);
                    break;
                }
            };
            for i in 0..count {
                match self.label(&mut batch, i) {
                    Some(outgoing) => out.push(outgoing),
                    None => lost += 1,
                }
            }
            let bytes_before = traffic.bytes;
            batch.send(&self.relay, &out, |reply, sent| match sent {
                Ok(()) => {
                    traffic.datagrams += 1;
                    traffic.bytes += reply.note.1 as u64;
                }
                Err(e) => {
                    log::debug!("udp reply from {} to {} not sent: {e}", reply.note.0, self.client);
                    lost += 1;
                }
            });
            if !out.is_empty() {
                self.shared.activity.touch();
                self.shared.meter.count_moved(0, traffic.bytes - bytes_before);
            }
            out.clear();
        }
        (traffic, lost)
    }

    /// The `i`th datagram of `batch` as a reply for the client, its header in front,
    /// noting its source and payload length; `None` drops it.
    fn label(&self, batch: &mut Batch, i: usize) -> Option<Outgoing<(SocketAddr, usize)>> {
        let (datagram, source) = batch.datagram(i);
        let (front, len) = (batch.front(), datagram.len());
        let end = front + len;
        if let Some(outer) = self.labelled {
            return match last_hop_header(datagram, outer) {
                Some((start, payload)) => Some(Outgoing {
                    slot: i,
                    range: front + start..end,
                    to: Toward::Client(self.client),
                    note: (source, len - payload),
                }),
                None => {
                    log::debug!("udp datagram from upstream {source} for {} dropped: bad header", self.client);
                    None
                }
            };
        }
        let header = Header { frag: 0, addr: Addr::Ip(source) };
        let start = front - header.encoded_len();
        header.emit(&mut batch.slot_mut(i)[start..]);
        Some(Outgoing { slot: i, range: start..end, to: Toward::Client(self.client), note: (source, len) })
    }
}

/// Domain names this association resolved recently, so a client talking to a server by
/// name does not cost a lookup per datagram.
#[derive(Default)]
struct NameCache {
    /// Oldest first.
    entries: Vec<CachedName>,
}

struct CachedName {
    name: Box<str>,
    ip: IpAddr,
    resolved: Instant,
}

impl NameCache {
    /// The address for `name`, from the cache while fresh, else resolved. Of several
    /// addresses, one of the client's family is preferred: the client reached us that way,
    /// so that family surely works here. Only families `egress` allows are taken.
    fn resolve(
        &mut self,
        name: &str,
        port: u16,
        prefer_ipv6: bool,
        egress: &Egress,
    ) -> Result<SocketAddr, ConnectError> {
        let now = Instant::now();
        self.entries.retain(|entry| now.duration_since(entry.resolved) < NAME_TTL);
        if let Some(entry) = self.entries.iter().find(|entry| &*entry.name == name) {
            return Ok(SocketAddr::new(entry.ip, port));
        }
        let addrs = egress.reachable(outbound::resolve(&TargetAddr::Domain(name.to_owned(), port))?)?;
        let chosen = addrs.iter().find(|addr| addr.is_ipv6() == prefer_ipv6).unwrap_or(&addrs[0]);
        if self.entries.len() >= NAME_CACHE_SIZE {
            self.entries.remove(0);
        }
        self.entries.push(CachedName { name: name.into(), ip: chosen.ip(), resolved: now });
        Ok(*chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use socket2::SockRef;

    #[test]
    fn the_socket_that_sends_to_targets_may_broadcast() {
        let opts = Config::default().udp;
        let v4 = open_outbound(false, &Egress::default(), &opts).unwrap();
        assert!(SockRef::from(&v4).broadcast().unwrap(), "SO_BROADCAST on the IPv4 outbound socket");
        assert!(v4.local_addr().unwrap().ip().is_unspecified());
        let v6 = open_outbound(true, &Egress::default(), &opts).unwrap();
        assert!(v6.local_addr().unwrap().is_ipv6());
    }

    #[test]
    fn a_fresh_cached_name_is_answered_without_a_lookup() {
        let mut cache = NameCache::default();
        // /etc/hosts says localhost is 127.0.0.1, so only the cache can answer 127.0.0.9;
        // and a name from /etc/hosts sends no DNS query off the machine if the cache fails.
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        cache.entries.push(CachedName { name: "localhost".into(), ip, resolved: Instant::now() });
        assert_eq!(cache.resolve("localhost", 53, false, &Egress::default()).unwrap(), SocketAddr::new(ip, 53));
        assert_eq!(cache.resolve("localhost", 5353, true, &Egress::default()).unwrap(), SocketAddr::new(ip, 5353));
    }

    #[test]
    fn a_stale_name_is_looked_up_again() {
        let mut cache = NameCache::default();
        let Some(long_ago) = Instant::now().checked_sub(NAME_TTL + Duration::from_secs(1)) else {
            return; // the clock started too recently to fake an old entry
        };
        let ip = "127.0.0.9".parse().unwrap();
        cache.entries.push(CachedName { name: "localhost".into(), ip, resolved: long_ago });
        assert_eq!(cache.resolve("localhost", 53, false, &Egress::default()).unwrap(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(cache.entries.len(), 1, "the stale entry made way for the fresh one");
        assert_eq!(cache.entries[0].ip, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn the_cache_stays_small_and_prefers_the_clients_family() {
        let mut cache = NameCache::default();
        for i in 0..NAME_CACHE_SIZE {
            let name: Box<str> = format!("n{i}.invalid").into();
            cache.entries.push(CachedName { name, ip: "127.0.0.9".parse().unwrap(), resolved: Instant::now() });
        }
        let addr = cache.resolve("localhost", 53, false, &Egress::default()).unwrap();
        assert_eq!(addr, "127.0.0.1:53".parse().unwrap());
        assert_eq!(cache.entries.len(), NAME_CACHE_SIZE);
        assert_eq!(&*cache.entries[0].name, "n1.invalid", "the oldest entry made room");
    }
}
