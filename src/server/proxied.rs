//! Clients behind a load balancer (`--proxy-protocol`): a connection from a trusted source
//! begins with a PROXY header that names the client, and from then on that client, not
//! the balancer, is the one the rules judge, the per-address limit counts, the log line,
//! `/sessions` and the UDP lock name.
//!
//! Where the header is read: on the worker, as the first phase of the handshake, never
//! in the accept loop. Read there, one slow or silent balancer connection would stop
//! every accept on its listener for up to the handshake timeout. So the accept loop
//! judges and charges nothing per address for a trusted source (the balancer's address
//! is not a client's, and charging it would make all its clients one): it admits the
//! connection against the server's limit alone, reclaimable while its header is unread
//! like any unfinished handshake. The worker reads the header within the handshake
//! timeout, then does for the client it names what the accept loop does for any other:
//! the rules' look at its address, and its charge to the per-address books, which may
//! reclaim that address's oldest waiting client or refuse this one. What is left of the
//! handshake timeout is what the SOCKS negotiation gets.

use super::accept::Warnings;
use crate::config::rules::RuleTable;
use crate::net::admission::{self, AddressGroup, Seat, Waiting};
use crate::net::negotiation::{HandshakeError, Negotiation};
use crate::session::access::refused_at_accept;
use crate::session::report::FoldedWarning;
use crate::session::stats::Refusal;
use crate::session::{Context, Listed};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A balancer's connection whose header named an admitted client: what the service gets.
pub(super) struct Heard {
    pub(super) stream: Arc<TcpStream>,
    pub(super) waiting: Option<Waiting>,
    /// What is left of the handshake timeout.
    pub(super) budget: Duration,
}

/// Reads the PROXY header of a connection from a trusted source and admits the client it
/// names (the balancer itself for v2 LOCAL and the headers that name no IP client).
/// `None`: the connection was closed, counted and, folded, logged in `warnings`.
pub(super) fn hear(
    ctx: &Context,
    stream: Arc<TcpStream>,
    waiting: Option<Waiting>,
    seat: &mut Seat,
    rules: &RuleTable,
    listed: &mut Listed,
    warnings: &Mutex<Warnings>,
) -> Option<Heard> {
    let balancer = listed.live.client;
    let heard = Negotiation::for_client(stream, ctx.config.handshake_timeout, None, waiting)
        .map_err(HandshakeError::from)
        .and_then(|mut negotiation| Ok((negotiation.read_proxy_header()?, negotiation.into_parts())))
        .and_then(|(header, parts)| match parts {
            // The header took the whole handshake timeout: nothing is left for the rest.
            (_, _, budget) if budget.is_zero() => Err(HandshakeError::TimedOut),
            parts => Ok((header, parts)),
        });
    let (header, (stream, waiting, budget)) = match heard {
        Ok(heard) => heard,
        // Reclaimed to make room: counted when it was, and no refusal of its own.
        Err(HandshakeError::Reclaimed) => {
            ctx.stats.session_dropped();
            return None;
        }
        Err(e) => {
            ctx.stats.session_refused(Refusal::ProxyHeader);
            warn(
                warnings,
                |w| &mut w.no_header,
                |count| {
                    format!(
                        "refused {count} connection(s) from a --proxy-protocol source, last {balancer}: no valid PROXY header: {e}"
                    )
                },
            );
            return None;
        }
    };
    let client = header.source().unwrap_or(balancer);
    if let Some(denied) = refused_at_accept(rules, client.ip()) {
        ctx.stats.session_refused(Refusal::Rule);
        warn(
            warnings,
            |w| &mut w.denied,
            |count| format!("refused {count} client(s), last {client} via {balancer}: {denied}"),
        );
        return None;
    }
    match seat.attribute(client.ip()) {
        Ok(0) => {}
        Ok(reclaimed) => {
            ctx.stats.sessions_reclaimed(reclaimed);
            warn(
                warnings,
                |w| &mut w.reclaimed,
                |count| {
                    format!(
                        "closed {count} client(s) still in their handshake to make room for newer ones, last for {client}"
                    )
                },
            );
        }
        Err(admission::Refusal::AddressLimit) => {
            ctx.stats.session_refused(Refusal::AddressLimit);
            warn(
                warnings,
                |w| &mut w.refused,
                |count| {
                    format!(
                        "refused {count} client(s), last {client} via {balancer}: {} holds {} sessions \
                         (--max-clients-per-ip), none still in its handshake",
                        AddressGroup::of(client.ip()),
                        seat.limits().per_address
                    )
                },
            );
            return None;
        }
        // A seat holds its place in the server's limit already; only its address's share
        // can be full.
        Err(admission::Refusal::Full) => {
            ctx.stats.session_refused(Refusal::PoolFull);
            return None;
        }
    }
    if header.source().is_some() {
        listed.carried(client);
    }
    Some(Heard { stream, waiting, budget })
}

/// Logs a refusal of one kind, folded with the others of its kind from every worker.
fn warn(
    warnings: &Mutex<Warnings>,
    kind: fn(&mut Warnings) -> &mut FoldedWarning,
    message: impl FnOnce(u64) -> String,
) {
    let mut warnings = warnings.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    kind(&mut warnings).warn(message);
}
