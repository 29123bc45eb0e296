//! A SOCKS4 or SOCKS4a client: one request, CONNECT or BIND, and its reply (two for BIND).
//!
//! SOCKS4 carries no password, so a service with users refuses it unless `--socks4` says
//! otherwise, and `--no-socks4` closes such clients without a word.

use super::bind;
use super::connect::{SocksReplies, hear, serve_connect};
use super::failure::{Failure, socks4_code};
use crate::config::rules::Cmd;
use crate::config::{Socks4Policy, SocksSpec};
use crate::net::negotiation::{HandshakeError, Negotiation, close_after_reply};
use crate::outbound::Egress;
use crate::session::access::Access;
use crate::session::{Context, End, Established, FailureReply, Login, SessionLog};
use crate::wire::addr::Addr;
use crate::wire::socks4::{Command, MAX_FIELD_LEN, Reply, ReplyCode, Request};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

pub(super) use crate::wire::socks4::VERSION;

/// Room for the longest request: the fixed header, then USERID and a 4a host name, each
/// with its NUL.
const REQUEST_BUF: usize = 8 + 2 * (MAX_FIELD_LEN + 1);

/// Serves a client whose first byte was 4, up to the relay.
pub(super) fn serve(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    mut negotiation: Negotiation,
    access: &Access,
    egress: &Egress,
    log: &mut SessionLog,
) -> Option<Established> {
    if spec.socks4 == Socks4Policy::Off {
        log.end = Some(End::Socks4Off);
        close_after_reply(negotiation.stream());
        return None;
    }
    let mut buf = [0u8; REQUEST_BUF];
    let request =
        match negotiation.read_message(&mut buf, Request::wanted_len).and_then(|bytes| Ok(Request::parse(bytes)?)) {
            Ok(request) => request,
            Err(HandshakeError::Malformed(e)) => {
                Socks4Replies.fail(negotiation, e.into(), log);
                return None;
            }
            Err(e) => {
                log.end = Some(End::Handshake(e));
                return None;
            }
        };
    let dialect = if matches!(request.addr, Addr::Domain(..)) { "SOCKS4a" } else { "SOCKS4" };
    let command = match request.command {
        Command::Connect => "CONNECT",
        Command::Bind => "BIND",
    };
    log.command = Some(format!("{dialect} {command}"));
    if !request.user_id.is_empty() {
        // The USERID is whatever the client claims; the log says so.
        log.user = Some(Login::Claimed(request.user_id.to_vec()));
    }
    let target = request.addr.to_owned();
    log.target = Some(target.clone());

    if spec.socks4 == Socks4Policy::Auto && spec.users.require_login() {
        let why = "SOCKS4 carries no password and this service has users (--socks4 allows it)";
        Socks4Replies.fail(negotiation, Failure::NotAllowed(why), log);
        return None;
    }
    let cmd = match request.command {
        Command::Connect => Cmd::Connect,
        Command::Bind => Cmd::Bind,
    };
    let (negotiation, heard) = hear(access, negotiation, cmd, &target, log, &Socks4Replies)?;
    match request.command {
        Command::Connect => serve_connect(ctx, negotiation, &target, heard, access, egress, log, &Socks4Replies),
        Command::Bind => bind::serve(ctx, negotiation, &target, heard, access, egress, log, &Socks4Replies),
    }
}

/// SOCKS4 replies: `VN=0 | CD | DSTPORT | DSTIP`.
struct Socks4Replies;

impl SocksReplies for Socks4Replies {
    /// An IPv6 address or a name (from an upstream hop) cannot go in a SOCKS4 reply; it
    /// goes as 0.0.0.0 with the port, which the protocol tells clients to read as "the
    /// SOCKS server's own address".
    fn granted(
        &self,
        negotiation: &mut Negotiation,
        addr: Addr<'_>,
        log: &mut SessionLog,
    ) -> Result<(), HandshakeError> {
        let ip = match addr {
            Addr::Ip(SocketAddr::V4(v4)) => *v4.ip(),
            Addr::Ip(SocketAddr::V6(_)) | Addr::Domain(..) => Ipv4Addr::UNSPECIFIED,
        };
        let reply = Reply { code: ReplyCode::Granted, addr: SocketAddrV4::new(ip, addr.port()) };
        log.replied(4, ReplyCode::Granted as u8);
        negotiation.write(&reply.emit())
    }

    fn fail(&self, mut negotiation: Negotiation, failure: Failure, log: &mut SessionLog) {
        let code = socks4_code(&failure);
        log.replied(4, code as u8);
        let unsent = negotiation.write(&Reply { code, ..Reply::rejected() }.emit()).err();
        log.end = Some(End::Replied(FailureReply { code: (code as u8).to_string(), why: failure.to_string(), unsent }));
        close_after_reply(negotiation.stream());
    }
}
