//! A proxy listener's clients: the first byte picks SOCKS5 ([`v5`]), SOCKS4/4a ([`v4`])
//! or, for anything else, an HTTP proxy request ([`crate::http`]); the SOCKS commands (CONNECT in [`connect`], [`bind`], [`udp_associate`]) and the
//! reply a failure earns ([`failure`]) are here too.

mod bind;
mod connect;
mod failure;
mod udp_associate;
mod v4;
mod v5;

use crate::config::SocksSpec;
use crate::config::rules::RuleTable;
use crate::http;
use crate::net::admission::Waiting;
use crate::net::negotiation::{Negotiation, close_after_reply};
use crate::net::sockopt;
use crate::outbound::Egress;
use crate::session::access::Access;
use crate::session::{self, Context, End, Established, Listed, SessionLog};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Serves one accepted client of a SOCKS listener from start to close, under `rules` (the
/// table in force when it was accepted, whatever a reload does meanwhile); it may be
/// reclaimed while `waiting` is held, which is until its request is in. Its handshake has
/// `budget` left (less than the whole when a PROXY header came first).
pub(crate) fn serve_socks(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    listed: Listed,
    client: Arc<TcpStream>,
    waiting: Option<Waiting>,
    rules: Arc<RuleTable>,
    budget: Duration,
) {
    let mut access = Access::new(rules, listed.client.ip(), ctx.config.chain.is_empty());
    let ingress = listed.live.local;
    session::handshake_then_relay(ctx, listed, |log| {
        negotiate_socks(ctx, spec, client, ingress, waiting, budget, &mut access, log)
    });
}

/// The whole SOCKS handshake, up to the relay. Never inlined; see [`session::handshake_then_relay`].
#[inline(never)]
#[allow(clippy::too_many_arguments)] // the client, its place, its rules and its egress, each apart
fn negotiate_socks(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    client: Arc<TcpStream>,
    ingress: Option<SocketAddr>,
    waiting: Option<Waiting>,
    budget: Duration,
    access: &mut Access,
    log: &mut SessionLog,
) -> Option<Established> {
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
    let mut negotiation =
        match Negotiation::for_client(client, budget, Some(ctx.config.client_timeouts().read), waiting) {
            Ok(n) => n,
            Err(e) => {
                log.end = Some(End::SocketSetup { what: "handshake timeout", error: e });
                return None;
            }
        };
    match negotiation.peek_first_byte() {
        Ok(v5::VERSION) if spec.socks5 => v5::serve(ctx, spec, negotiation, access, &egress, log),
        Ok(v4::VERSION) if spec.socks5 => v4::serve(ctx, spec, negotiation, access, &egress, log),
        // Any other byte begins an HTTP/1.x request (on an http:// service, any byte).
        Ok(_) if spec.http => http::serve(ctx, spec, negotiation, access, &egress, log),
        Ok(other) => {
            log.end = Some(End::NotSocks(other));
            // No reply, since there is no protocol to word one in; a clean FIN still
            // tells the client more than a reset would.
            close_after_reply(negotiation.stream());
            None
        }
        Err(e) => {
            log.end = Some(End::Handshake(e));
            None
        }
    }
}
