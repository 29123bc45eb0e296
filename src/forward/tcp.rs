//! `tcp://` port forwarding: each accepted connection is relayed to one fixed target,
//! through the same outbound connect and relay as a SOCKS CONNECT.

use crate::config::TcpForwardSpec;
use crate::config::rules::{Cmd, RuleTable};
use crate::net::negotiation::close_after_reply;
use crate::net::sockopt;
use crate::session::access::Access;
use crate::session::{self, Context, End, Established, Listed, SessionLog};
use std::net::TcpStream;
use std::sync::Arc;

/// Serves one accepted client of a `tcp://` service from start to close, under `rules`
/// (the table that judged it at accept).
pub(crate) fn serve(
    ctx: &Arc<Context>,
    spec: &TcpForwardSpec,
    listed: Listed,
    client: TcpStream,
    rules: Arc<RuleTable>,
) {
    let access = Access::for_forward(rules, listed.live.client.ip(), ctx.config.chain.is_empty());
    session::handshake_then_relay(ctx, listed, |log| connect(ctx, spec, client, &access, log));
}

/// Connects the client's target. Never inlined; see [`session::handshake_then_relay`].
#[inline(never)]
fn connect(
    ctx: &Arc<Context>,
    spec: &TcpForwardSpec,
    client: TcpStream,
    access: &Access,
    log: &mut SessionLog,
) -> Option<Established> {
    log.command = Some("TCP-FORWARD".into());
    log.target = Some(spec.target.clone());
    if let Err(e) = sockopt::tune_accepted(&client, &ctx.config.socket) {
        log.end = Some(End::SocketSetup { what: "socket options", error: e });
        return None;
    }
    // The operator chose this target: the access rules judge who may use the forward, not
    // where it goes.
    let connected = match ctx.connect_target(access, Cmd::Connect, &spec.target) {
        Ok(connected) => connected,
        Err(e) => {
            log.end = Some(End::ForwardUnreachable(e));
            // A forwarder has no reply to send; the client learns from a clean close
            // (FIN, not a reset over whatever it already sent).
            close_after_reply(&client);
            return None;
        }
    };
    log.reached = Some(connected.peer);
    log.outbound_local = Some(connected.local);
    Some(Established { client, target: connected.stream })
}
