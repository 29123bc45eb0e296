//! `tcp://` port forwarding: each accepted connection is relayed to one fixed target,
//! through the same outbound connect and relay as a SOCKS CONNECT.

use crate::config::TcpForwardSpec;
use crate::config::rules::{Cmd, RuleTable};
use crate::net::negotiation::close_after_reply;
use crate::net::sockopt;
use crate::outbound::Egress;
use crate::session::access::Access;
use crate::session::{self, Context, End, Established, Listed, SessionLog};
use std::net::{SocketAddr, TcpStream};
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
    let ingress = listed.live.local;
    let access = Access::for_forward(rules, listed.client.ip(), ctx.config.chain.is_empty());
    session::handshake_then_relay(ctx, listed, |log| connect(ctx, spec, client, &access, ingress, log));
}

/// Connects the client's target; `ingress` is the address it reached, where known.
/// Never inlined; see [`session::handshake_then_relay`].
#[inline(never)]
fn connect(
    ctx: &Arc<Context>,
    spec: &TcpForwardSpec,
    client: TcpStream,
    access: &Access,
    ingress: Option<SocketAddr>,
    log: &mut SessionLog,
) -> Option<Established> {
    log.command = Some("TCP-FORWARD".into());
    log.target = Some(spec.target.clone());
    if let Err(e) = sockopt::tune_client(&client, &ctx.config.socket, ctx.config.client_timeouts()) {
        log.end = Some(End::SocketSetup { what: "socket options", error: e });
        return None;
    }
    let egress = match Egress::for_client(&spec.egress, ingress, &client) {
        Ok(egress) => egress,
        Err(error) => {
            log.end = Some(End::SocketSetup { what: "the outbound address", error });
            return None;
        }
    };
    // The operator chose this target: the access rules judge who may use the forward, not
    // where it goes.
    let connected = match ctx.connect_target(access, Cmd::Connect, &spec.target, &egress) {
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
