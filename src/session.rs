//! One client's life on a SOCKS listener: which protocol it speaks, and the log line
//! written when it ends.

use crate::config::SocksSpec;
use crate::message_io::{HandshakeError, Negotiation, close_after_reply};
use crate::reply::Failure;
use crate::server::Context;
use crate::sockopt;
use crate::stats::human_bytes;
use crate::udp_relay::UdpCounts;
use crate::wire::addr::TargetAddr;
use crate::{socks4, socks5};
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// What the finished-session log line reports; filled in as the session goes.
pub struct SessionLog {
    pub id: u64,
    pub client: SocketAddr,
    started: Instant,
    pub user: Option<String>,
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
    /// How it ended: `closed`, a reply code with its reason, an error.
    pub outcome: String,
}

impl SessionLog {
    pub fn new(id: u64, client: SocketAddr) -> Self {
        SessionLog {
            id,
            client,
            started: Instant::now(),
            user: None,
            command: None,
            target: None,
            reached: None,
            outbound_local: None,
            up: 0,
            down: 0,
            udp: None,
            outcome: String::new(),
        }
    }
}

impl fmt::Display for SessionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {} {}", self.id, self.client)?;
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
        write!(f, " {:.1}s: {}", self.started.elapsed().as_secs_f64(), self.outcome)
    }
}

/// Runs one session, then writes its log line and counts it out. A panic while serving
/// (a bug, never the peer's doing) still gets its line and is counted out; otherwise a
/// drain would wait its whole timeout for a session that is gone.
pub fn logged(ctx: &Context, id: u64, peer: SocketAddr, serve: impl FnOnce(&mut SessionLog)) {
    let mut log = SessionLog::new(id, peer);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&mut log))).is_err() {
        log.outcome = "internal error: the session panicked (a bug in burrowd)".into();
    }
    log::info!("{log}");
    ctx.stats.session_ended(log.up, log.down);
}

/// Two connected sockets to relay between: what a successful CONNECT or BIND hands back.
pub struct Established {
    pub client: TcpStream,
    pub target: TcpStream,
}

impl Established {
    /// Ends the negotiation: from here on the client's socket carries only relayed bytes.
    pub fn new(negotiation: Negotiation, target: TcpStream) -> Self {
        Established { client: negotiation.into_stream(), target }
    }
}

/// Runs one TCP session: `handshake`, then, if it established a connection, the relay
/// until both directions are done; then the log line.
///
/// The relay starts here, once the handshake has returned, never from inside it: the
/// worker then waits for data at a shallow depth, and an idle session keeps two of its
/// stack pages resident rather than three. So `handshake` calls a function that is never
/// inlined, whose frames are gone by the time the relay starts.
pub fn handshake_then_relay(
    ctx: &Arc<Context>,
    id: u64,
    peer: SocketAddr,
    handshake: impl FnOnce(&mut SessionLog) -> Option<Established>,
) {
    logged(ctx, id, peer, |log| {
        if let Some(established) = handshake(log) {
            relay(ctx, established, log);
        }
    });
}

/// Serves one accepted client of a SOCKS listener from start to close.
pub fn serve_socks(ctx: &Arc<Context>, spec: &SocksSpec, id: u64, client: TcpStream, peer: SocketAddr) {
    handshake_then_relay(ctx, id, peer, |log| negotiate_socks(ctx, spec, client, log));
}

/// The whole SOCKS handshake, up to the relay. Never inlined; see [`handshake_then_relay`].
#[inline(never)]
fn negotiate_socks(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    client: TcpStream,
    log: &mut SessionLog,
) -> Option<Established> {
    if let Err(e) = sockopt::tune_accepted(&client, &ctx.config.socket) {
        log.outcome = format!("cannot set socket options: {e}");
        return None;
    }
    let mut negotiation = match Negotiation::new(client, ctx.config.handshake_timeout) {
        Ok(n) => n,
        Err(e) => {
            log.outcome = format!("cannot set handshake timeout: {e}");
            return None;
        }
    };
    match negotiation.peek_first_byte() {
        Ok(socks5::VERSION) => socks5::serve(ctx, spec, negotiation, log),
        Ok(socks4::VERSION) => socks4::serve(ctx, spec, negotiation, log),
        Ok(other) => {
            log.outcome = format!("not SOCKS: first byte {other:#04x}, closed");
            // No reply, since there is no protocol to word one in; a clean FIN still
            // tells the client more than a reset would.
            close_after_reply(negotiation.stream());
            None
        }
        Err(e) => {
            log.outcome = e.to_string();
            None
        }
    }
}

/// How one protocol words its replies. The command flows (CONNECT below, BIND in
/// [`crate::bind`]) are the same for SOCKS4 and SOCKS5 apart from this.
pub trait Replies {
    /// Sends a success reply carrying `addr`.
    fn granted(&self, negotiation: &mut Negotiation, addr: SocketAddr) -> Result<(), HandshakeError>;
    /// Sends the reply `failure` earns, records it in the log, and closes.
    fn fail(&self, negotiation: Negotiation, failure: Failure, log: &mut SessionLog);
}

/// CONNECT: opens the outbound connection and replies with its local address.
pub fn serve_connect(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    target: &TargetAddr,
    log: &mut SessionLog,
    replies: &impl Replies,
) -> Option<Established> {
    let connected = match ctx.connect_target(target) {
        Ok(connected) => connected,
        Err(e) => {
            replies.fail(negotiation, e.into(), log);
            return None;
        }
    };
    log.reached = Some(connected.peer);
    log.outbound_local = Some(connected.local);
    if let Err(e) = replies.granted(&mut negotiation, connected.local) {
        log.outcome = e.to_string();
        return None;
    }
    Some(Established::new(negotiation, connected.stream))
}

/// Relays an established session until both directions are done.
fn relay(ctx: &Arc<Context>, established: Established, log: &mut SessionLog) {
    // And pages a deeper call (this session's or an earlier one's on this worker) took
    // below here go back before the wait, which may last hours.
    crate::stack::release_unused();
    let outcome = ctx.relayer.relay(established.client, established.target);
    log.up = outcome.up;
    log.down = outcome.down;
    log.outcome = outcome.end.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_panicking_session_is_still_counted_out_so_a_drain_ends() {
        let ctx = Context::new(Config::default(), Arc::new(AtomicBool::new(false)));
        ctx.stats.session_queued();
        logged(&ctx, 1, "127.0.0.1:5".parse().unwrap(), |log| {
            log.up = 3;
            panic!("a bug on purpose");
        });
        let stats = ctx.stats.snapshot();
        assert_eq!((stats.active, stats.sessions, stats.bytes_up), (0, 1, 3));
    }
}
