//! What every session shares and how one is run: the [`Context`], the counters, and the
//! runner that takes a session from handshake through relay to its log line.

pub(crate) mod access;
pub(crate) mod context;
pub(crate) mod end;
pub(crate) mod live;
pub(crate) mod report;
pub(crate) mod stats;

pub(crate) use context::Context;
pub(crate) use end::{End, FailureReply, UdpEnd};
pub(crate) use live::{Listed, State};
pub(crate) use report::{Login, SessionLog};

use crate::net::negotiation::Negotiation;
use std::net::TcpStream;
use std::sync::Arc;

/// Runs one session, then writes its log line and counts it out. A panic while serving
/// (a bug, never the peer's doing) still gets its line and is counted out; otherwise a
/// drain would wait its whole timeout for a session that is gone.
pub(crate) fn logged(ctx: &Context, listed: Listed, serve: impl FnOnce(&mut SessionLog)) {
    let mut log = SessionLog::new(listed.live.id, listed.client);
    log.via = Some(listed.live.client).filter(|&balancer| balancer != listed.client);
    log.live = Some(Arc::clone(&listed.live));
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&mut log))).is_err() {
        log.end = Some(End::Bug("the session panicked"));
    }
    let outcome = log.end.get_or_insert(End::Bug("the session recorded no end")).outcome();
    log::info!("{log}");
    ctx.stats.session_ended(&log, outcome);
    // Off the live list only now, so a session is never missing from both it and the log.
    drop(listed);
}

/// Two connected sockets to relay between: what a successful CONNECT or BIND hands back.
pub(crate) struct Established {
    pub client: TcpStream,
    pub target: TcpStream,
}

impl Established {
    /// Ends the negotiation: from here on the client's socket carries only relayed bytes.
    pub(crate) fn new(negotiation: Negotiation, target: TcpStream) -> Self {
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
pub(crate) fn handshake_then_relay(
    ctx: &Arc<Context>,
    listed: Listed,
    handshake: impl FnOnce(&mut SessionLog) -> Option<Established>,
) {
    logged(ctx, listed, |log| {
        if let Some(established) = handshake(log) {
            relay(ctx, established, log);
        }
    });
}

/// Relays an established session until both directions are done.
fn relay(ctx: &Arc<Context>, established: Established, log: &mut SessionLog) {
    log.publish(State::Relay);
    let meter = log.live.as_ref().map(|live| Arc::clone(&live.meter)).unwrap_or_default();
    let outcome = ctx.relayer.relay(established.client, established.target, meter);
    log.up = outcome.up;
    log.down = outcome.down;
    log.end = Some(End::Relay(outcome.end));
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
        let client = "127.0.0.1:5".parse().unwrap();
        logged(&ctx, ctx.list_session(client, None, client, Arc::default()), |log| {
            log.up = 3;
            panic!("a bug on purpose");
        });
        let stats = ctx.stats.snapshot();
        assert_eq!((stats.active, stats.sessions, stats.bytes_up), (0, 1, 3));
    }
}
