//! A SOCKS5 client's negotiation, in the order it happens: greeting and method choice,
//! username/password, request, then the command.

use super::bind;
use super::connect::{SocksReplies, hear, serve_connect};
use super::failure::{Failure, socks5_code};
use super::udp_associate::Association;
use crate::config::SocksSpec;
use crate::config::rules::Cmd;
use crate::net::negotiation::{HandshakeError, Negotiation, close_after_reply};
use crate::outbound::Egress;
use crate::session::access::{Access, Heard};
use crate::session::{Context, End, Established, FailureReply, Login, SessionLog, State};
use crate::wire::addr::{Addr, TargetAddr};
use crate::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use crate::wire::{self, userpass};
use std::sync::Arc;

pub(super) use crate::wire::socks5::VERSION;

/// Serves a client whose first byte was 5, up to the relay (CONNECT, BIND) or to the end
/// of its association (UDP ASSOCIATE).
pub(super) fn serve(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    mut negotiation: Negotiation,
    access: &mut Access,
    egress: &Egress,
    log: &mut SessionLog,
) -> Option<Established> {
    let (command, target) = match negotiate(spec, &mut negotiation, log) {
        Ok(request) => request,
        Err(Rejected::Reply(failure)) => {
            fail(negotiation, failure, log);
            return None;
        }
        Err(Rejected::Closed(end)) => {
            log.end = Some(end);
            return None;
        }
    };
    log.command = Some(command.to_string());
    log.target = Some(target.clone());
    if let Some(Login::Verified(name)) = &log.user {
        access.logged_in(name);
    }
    let cmd = match command {
        Command::Connect => Cmd::Connect,
        Command::Bind => Cmd::Bind,
        Command::UdpAssociate => Cmd::Udp,
    };
    let (negotiation, heard) = hear(access, negotiation, cmd, &target, log, &Socks5Replies)?;
    match command {
        Command::Connect => serve_connect(ctx, negotiation, &target, heard, access, egress, log, &Socks5Replies),
        Command::Bind => bind::serve(ctx, negotiation, &target, heard, access, egress, log, &Socks5Replies),
        Command::UdpAssociate => {
            udp_associate(ctx, negotiation, &target, heard, access, egress, log);
            None
        }
    }
}

/// How a negotiation that did not reach a command ended.
enum Rejected {
    /// The request deserves a reply code.
    Reply(Failure),
    /// The connection is closed without a SOCKS5 reply (bad greeting, failed login, ...).
    Closed(End),
}

impl From<HandshakeError> for Rejected {
    fn from(e: HandshakeError) -> Self {
        Rejected::Closed(End::Handshake(e))
    }
}

/// Room for the longest message a client sends: credentials of 255-byte name and password.
const HANDSHAKE_BUF: usize = userpass::Request::MAX_LEN;
const _: () = assert!(Request::MAX_LEN <= HANDSHAKE_BUF && Greeting::MAX_LEN <= HANDSHAKE_BUF);

fn negotiate(
    spec: &SocksSpec,
    negotiation: &mut Negotiation,
    log: &mut SessionLog,
) -> Result<(Command, TargetAddr), Rejected> {
    let mut buf = [0u8; HANDSHAKE_BUF];

    let greeting = Greeting::parse(negotiation.read_message(&mut buf, Greeting::wanted_len)?)?;
    let users = &spec.users;
    let wanted = if users.require_login() { method::USER_PASS } else { method::NO_AUTH };
    let chosen = if greeting.offers(wanted) { wanted } else { method::NONE_ACCEPTABLE };
    negotiation.write(&MethodChoice { method: chosen }.emit())?;
    if chosen == method::NONE_ACCEPTABLE {
        close_after_reply(negotiation.stream());
        return Err(Rejected::Closed(End::NoAcceptableMethod(greeting.methods.to_vec())));
    }

    if chosen == method::USER_PASS {
        let credentials = userpass::Request::parse(negotiation.read_message(&mut buf, userpass::Request::wanted_len)?)?;
        let accepted = users.verify(credentials.user, credentials.password);
        let status = if accepted { userpass::STATUS_SUCCESS } else { userpass::STATUS_FAILURE };
        negotiation.write(&userpass::Status { status }.emit())?;
        if !accepted {
            close_after_reply(negotiation.stream());
            let name = String::from_utf8_lossy(credentials.user);
            return Err(Rejected::Closed(End::LoginFailed { user: format!("{name:?}") }));
        }
        log.user = Some(Login::Verified(credentials.user.to_vec()));
    }

    let request =
        match negotiation.read_message(&mut buf, Request::wanted_len).and_then(|bytes| Ok(Request::parse(bytes)?)) {
            Ok(request) => request,
            // A request that is not SOCKS5 at all gets no SOCKS5 reply.
            Err(HandshakeError::Malformed(e @ wire::Error::BadVersion(_))) => {
                return Err(HandshakeError::Malformed(e).into());
            }
            Err(HandshakeError::Malformed(e)) => return Err(Rejected::Reply(e.into())),
            Err(e) => return Err(e.into()),
        };
    Ok((request.command, request.addr.to_owned()))
}

impl From<wire::Error> for Rejected {
    fn from(e: wire::Error) -> Self {
        Rejected::Closed(End::Handshake(HandshakeError::Malformed(e)))
    }
}

/// Sends a well-formed failure reply and closes.
fn fail(mut negotiation: Negotiation, failure: Failure, log: &mut SessionLog) {
    let code = socks5_code(&failure);
    let unsent = send_reply(&mut negotiation, Reply::failure(code), log).err();
    log.end = Some(End::Replied(FailureReply { code: code.to_string(), why: failure.to_string(), unsent }));
    close_after_reply(negotiation.stream());
}

fn send_reply(negotiation: &mut Negotiation, reply: Reply<'_>, log: &mut SessionLog) -> Result<(), HandshakeError> {
    log.replied(5, reply.code.0);
    let mut buf = [0u8; Reply::MAX_LEN];
    let len = reply.emit(&mut buf);
    negotiation.write(&buf[..len])
}

/// SOCKS5 replies: `VER=5 | REP | RSV | ATYP | BND.ADDR | BND.PORT`.
struct Socks5Replies;

impl SocksReplies for Socks5Replies {
    fn granted(
        &self,
        negotiation: &mut Negotiation,
        addr: Addr<'_>,
        log: &mut SessionLog,
    ) -> Result<(), HandshakeError> {
        send_reply(negotiation, Reply { code: ReplyCode::SUCCEEDED, addr }, log)
    }

    fn fail(&self, negotiation: Negotiation, failure: Failure, log: &mut SessionLog) {
        fail(negotiation, failure, log)
    }
}

/// UDP ASSOCIATE: `from` is where the client says it will send datagrams from.
///
/// Never inlined: its relay's state would otherwise swell the frame of every SOCKS5
/// handshake, and pages a handshake touches stay with its worker (see `session::handshake_then_relay`).
#[inline(never)]
fn udp_associate(
    ctx: &Arc<Context>,
    mut negotiation: Negotiation,
    from: &TargetAddr,
    _heard: Heard,
    access: &Access,
    egress: &Egress,
    log: &mut SessionLog,
) {
    let upstream = match ctx.udp_upstream(egress) {
        Ok(upstream) => upstream,
        Err(e) => return fail(negotiation, e.into(), log),
    };
    log.reached = upstream.as_ref().map(|upstream| upstream.relay);
    // The association's TCP leg to the hop, as `ss -tn` shows it.
    let control_leg = upstream.as_ref().and_then(|upstream| upstream.control_leg());
    let association = match Association::open(ctx, negotiation.stream(), from, log.id, upstream, access, egress) {
        Ok(association) => association,
        Err(e) => return fail(negotiation, Failure::Local(e), log),
    };
    // Listed as an association before the client hears it is one, so that whoever it
    // tells never finds it still negotiating.
    log.publish(State::Udp);
    let meter = match &log.live {
        Some(live) => {
            live.update(|details| details.outbound = control_leg);
            Arc::clone(&live.meter)
        }
        None => Arc::default(),
    };
    let reply = Reply { code: ReplyCode::SUCCEEDED, addr: Addr::Ip(association.advertised()) };
    if let Err(e) = send_reply(&mut negotiation, reply, log) {
        log.end = Some(End::Handshake(e));
        return;
    }
    let outcome = association.run(ctx, negotiation.into_stream(), meter);
    log.up = outcome.counts.up.bytes;
    log.down = outcome.counts.down.bytes;
    log.udp = Some(outcome.counts);
    log.end = Some(End::Udp(outcome.end));
}
