//! An HTTP/1.x proxy client of a proxy service: a client whose first byte is not a SOCKS
//! version comes here from the SOCKS service's first look, and so does every client of an
//! `http://` service.
//! In the order its life goes: the request head, the login, the target; then CONNECT
//! relays as a SOCKS CONNECT does, and an absolute-form request is forwarded ([`forward`]).
//! Failures end in the reply [`reply`] chooses.

mod forward;
mod reply;

use crate::config::SocksSpec;
use crate::config::rules::Cmd;
use crate::config::users::Users;
use crate::net::negotiation::{HandshakeError, Negotiation, close_after_reply};
use crate::outbound::Egress;
use crate::session::access::{Access, NotHeard};
use crate::session::{Context, End, Established, Login, SessionLog, State};
use crate::wire::http::{self, MAX_HEAD_LEN, RequestHead};
use crate::wire::{self, addr::TargetAddr, base64};
use reply::{Refusal, fail};
use std::sync::Arc;

/// What a CONNECT success says before the tunnel starts.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Serves one HTTP proxy request, up to the relay (CONNECT) or to the end of its
/// response (a forwarded request); the target is reached as `egress` says.
pub(crate) fn serve(
    ctx: &Arc<Context>,
    spec: &SocksSpec,
    mut negotiation: Negotiation,
    access: &mut Access,
    egress: &Egress,
    log: &mut SessionLog,
) -> Option<Established> {
    // On the heap: 16 KiB on the stack would stay resident on every worker.
    let mut buf = vec![0u8; MAX_HEAD_LEN];
    let bytes = match negotiation.read_message(&mut buf, http::head_len) {
        Ok(bytes) => bytes,
        Err(HandshakeError::Malformed(wire::Error::FieldTooLong)) => {
            fail(negotiation, Refusal::HeadTooLong, log);
            return None;
        }
        Err(HandshakeError::Malformed(e)) => {
            fail(negotiation, Refusal::Malformed(e), log);
            return None;
        }
        Err(e) => {
            log.end = Some(End::Handshake(e));
            return None;
        }
    };
    let head = match RequestHead::parse(bytes) {
        Ok(head) => head,
        Err(e) => {
            fail(negotiation, Refusal::Malformed(e), log);
            return None;
        }
    };
    log.command = Some(head.method.into());
    let request = match Request::of(&head) {
        Ok(request) => request,
        Err(refusal) => {
            fail(negotiation, refusal, log);
            return None;
        }
    };
    log.target = Some(request.target().clone());
    if let Err(refusal) = log_in(&spec.users, &head, access, log) {
        fail(negotiation, refusal, log);
        return None;
    }
    // The whole head is in: from here the client waits for us, not we for it. HTTP has
    // only CONNECT to ask the rules about.
    match access.hear(&mut negotiation, Cmd::Connect, request.target()) {
        Ok(_heard) => {}
        Err(NotHeard::Reclaimed(e)) => {
            log.end = Some(End::Handshake(e));
            return None;
        }
        Err(NotHeard::Denied(denied)) => {
            fail(negotiation, Refusal::Denied(denied), log);
            return None;
        }
    }
    let connected = match ctx.connect_target(access, Cmd::Connect, request.target(), egress) {
        Ok(connected) => connected,
        Err(e) => {
            fail(negotiation, e.into(), log);
            return None;
        }
    };
    log.reached = Some(connected.peer);
    log.outbound_local = Some(connected.local);
    match request {
        Request::Connect(_) => {
            log.replied_http(200);
            // Listed as relaying before the client hears it may start, as a SOCKS CONNECT is.
            log.publish(State::Relay);
            if let Err(e) = negotiation.write(ESTABLISHED) {
                log.end = Some(End::Handshake(e));
                return None;
            }
            Some(Established::new(negotiation, connected.stream))
        }
        Request::Forward { authority, path, .. } => {
            log.publish(State::Relay);
            let meter = log.live.as_ref().map(|live| Arc::clone(&live.meter)).unwrap_or_default();
            let origin = forward::Origin { stream: connected.stream, authority, path };
            match forward::exchange(ctx, negotiation.stream(), origin, &head, &meter) {
                Ok(exchanged) => {
                    (log.up, log.down) = (exchanged.up, exchanged.down);
                    log.end = Some(End::Relay(exchanged.end));
                    close_after_reply(negotiation.stream());
                }
                Err(refusal) => fail(negotiation, refusal, log),
            }
            None
        }
    }
}

/// What a request asks the proxy for.
enum Request<'a> {
    /// `CONNECT host:port`: a tunnel.
    Connect(TargetAddr),
    /// An absolute-form request, to send on to `target` as `path` with `Host: authority`.
    Forward { target: TargetAddr, authority: &'a str, path: &'a str },
}

impl<'a> Request<'a> {
    fn of(head: &RequestHead<'a>) -> Result<Self, Refusal> {
        if head.method == "CONNECT" {
            let target = http::parse_authority(head.target, None).map_err(Refusal::Malformed)?;
            return Ok(Request::Connect(target.to_owned()));
        }
        if head.target.starts_with('/') || head.target == "*" {
            return Err(Refusal::NotAProxyRequest);
        }
        let (target, authority, path) = http::parse_absolute(head.target).map_err(Refusal::Malformed)?;
        Ok(Request::Forward { target: target.to_owned(), authority, path })
    }

    fn target(&self) -> &TargetAddr {
        match self {
            Request::Connect(target) | Request::Forward { target, .. } => target,
        }
    }
}

/// Checks the `Proxy-Authorization: Basic` login a service with users requires, against
/// the same users SOCKS5 logs in with.
fn log_in(users: &Users, head: &RequestHead<'_>, access: &mut Access, log: &mut SessionLog) -> Result<(), Refusal> {
    if !users.require_login() {
        return Ok(());
    }
    let credentials = http::values(&head.headers, "proxy-authorization").find_map(basic_credentials);
    let Some((user, password)) = credentials else {
        return Err(Refusal::LoginRequired(None));
    };
    if !users.verify(&user, &password) {
        return Err(Refusal::LoginRequired(Some(format!("{:?}", String::from_utf8_lossy(&user)))));
    }
    access.logged_in(&user);
    log.user = Some(Login::Verified(user));
    Ok(())
}

/// `Basic BASE64(user:password)` (RFC 7617), split at the first ':'.
fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::decode(token.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let value = format!("basic  {}", base64::encode(b"alice:pa:ss"));
        assert_eq!(basic_credentials(value.as_bytes()), Some((b"alice".to_vec(), b"pa:ss".to_vec())));
        assert_eq!(basic_credentials(format!("Basic {}", base64::encode(b"nocolon")).as_bytes()), None);
        assert_eq!(basic_credentials(b"Bearer abc"), None);
        assert_eq!(basic_credentials(b"Basic !!!!"), None);
        assert_eq!(basic_credentials(b"Basic"), None);
    }
}
