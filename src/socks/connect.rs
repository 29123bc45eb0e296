//! CONNECT, for SOCKS5 and SOCKS4 alike, and the replies each protocol words its own way.

use super::failure::Failure;
use crate::config::rules::Cmd;
use crate::net::negotiation::{HandshakeError, Negotiation};
use crate::outbound::Egress;
use crate::session::access::{Access, Heard, NotHeard};
use crate::session::{Context, End, Established, SessionLog, State};
use crate::wire::addr::{Addr, TargetAddr};
use std::sync::Arc;

/// How one protocol words its replies. The command flows (CONNECT below, BIND in
/// [`super::bind`]) are the same for SOCKS4 and SOCKS5 apart from this.
pub(crate) trait SocksReplies {
    /// Sends a success reply carrying `addr`, and records it in the log.
    fn granted(
        &self,
        negotiation: &mut Negotiation,
        addr: Addr<'_>,
        log: &mut SessionLog,
    ) -> Result<(), HandshakeError>;
    /// Sends the reply `failure` earns, records it in the log, and closes.
    fn fail(&self, negotiation: Negotiation, failure: Failure, log: &mut SessionLog);
}

/// Asks the rules about the request ([`Access::hear`], the one step every SOCKS command
/// passes) and hands the negotiation back with the proof that it was heard. A client
/// reclaimed meanwhile ends as such, and a refused one gets the reply `replies` words for
/// the refusal; either way the session ends there (`None`).
pub(super) fn hear(
    access: &Access,
    mut negotiation: Negotiation,
    cmd: Cmd,
    target: &TargetAddr,
    log: &mut SessionLog,
    replies: &impl SocksReplies,
) -> Option<(Negotiation, Heard)> {
    match access.hear(&mut negotiation, cmd, target) {
        Ok(heard) => Some((negotiation, heard)),
        Err(NotHeard::Reclaimed(e)) => {
            log.end = Some(End::Handshake(e));
            None
        }
        Err(NotHeard::Denied(denied)) => {
            replies.fail(negotiation, denied.into(), log);
            None
        }
    }
}

/// CONNECT: opens the outbound connection, leaving as `egress` says, and replies with the
/// address the target sees it come from: our outbound socket's, or through a chain the
/// last hop's. [`Access::hear`] has refused what the name, port or client decide; the rest
/// is judged on the way out.
#[allow(clippy::too_many_arguments)] // the request, its proofs, its rules and its egress, each apart
pub(super) fn serve_connect(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    target: &TargetAddr,
    _heard: Heard,
    access: &Access,
    egress: &Egress,
    log: &mut SessionLog,
    replies: &impl SocksReplies,
) -> Option<Established> {
    let connected = match ctx.connect_target(access, Cmd::Connect, target, egress) {
        Ok(connected) => connected,
        Err(e) => {
            replies.fail(negotiation, e.into(), log);
            return None;
        }
    };
    log.reached = Some(connected.peer);
    log.outbound_local = Some(connected.local);
    // Listed as relaying before the client hears it may start: whoever it tells (or itself)
    // finds the session as it is, not still negotiating.
    log.publish(State::Relay);
    if let Err(e) = replies.granted(&mut negotiation, connected.source.as_addr(), log) {
        log.end = Some(End::Handshake(e));
        return None;
    }
    Some(Established::new(negotiation, connected.stream))
}
