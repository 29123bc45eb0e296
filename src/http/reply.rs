//! The one place that decides which HTTP status a failure earns, and the short
//! plain-text reply that carries it.

use crate::net::negotiation::{Negotiation, close_after_reply};
use crate::outbound::{ConnectError, UpstreamError};
use crate::session::access::Denied;
use crate::session::{End, FailureReply, SessionLog};
use crate::wire;
use crate::wire::http::MAX_HEAD_LEN;
use std::fmt;
use std::io;

/// Why an HTTP proxy request was not served. Each ends in a reply to the client.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The head is not a valid HTTP/1.x request a proxy can serve.
    Malformed(wire::Error),
    /// An origin-form request (`GET / HTTP/1.1`): the client thinks it talks to a web server.
    NotAProxyRequest,
    /// The head is longer than [`MAX_HEAD_LEN`].
    HeadTooLong,
    /// The service has users and the request carried no login, or a wrong one; the
    /// name it tried, if any.
    LoginRequired(Option<String>),
    /// The access rules refuse it.
    Denied(Denied),
    /// The outbound connection could not be made.
    Connect(ConnectError),
    /// The origin's response could not be read: closed, malformed, or an error.
    BadResponse(String),
    /// The origin sent no response head in time.
    ResponseTimedOut,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "malformed request: {e}"),
            Refusal::NotAProxyRequest => write!(f, "an origin-form request: not a proxy request"),
            Refusal::HeadTooLong => write!(f, "request head over {} KiB", MAX_HEAD_LEN / 1024),
            Refusal::LoginRequired(None) => write!(f, "without a Proxy-Authorization: Basic login"),
            Refusal::LoginRequired(Some(user)) => write!(f, "for user {user}"),
            Refusal::Denied(denied) => denied.fmt(f),
            Refusal::Connect(e) => e.fmt(f),
            Refusal::BadResponse(why) => write!(f, "bad response from the target: {why}"),
            Refusal::ResponseTimedOut => write!(f, "the target sent no response in time"),
        }
    }
}

impl From<ConnectError> for Refusal {
    fn from(e: ConnectError) -> Self {
        Refusal::Connect(e)
    }
}

/// The status, its reason phrase and the one-line body for a refusal.
pub(super) fn status(refusal: &Refusal) -> (u16, &'static str, &'static str) {
    const BAD_REQUEST: (u16, &str) = (400, "Bad Request");
    const BAD_GATEWAY: (u16, &str) = (502, "Bad Gateway");
    const GATEWAY_TIMEOUT: (u16, &str) = (504, "Gateway Timeout");
    const FORBIDDEN: (u16, &str) = (403, "Forbidden");
    let ((code, reason), body) = match refusal {
        Refusal::Malformed(_) => (BAD_REQUEST, "burrowd: malformed HTTP proxy request\n"),
        Refusal::NotAProxyRequest => {
            (BAD_REQUEST, "burrowd is a proxy: ask for an absolute URL (GET http://host/path) or CONNECT host:port\n")
        }
        Refusal::HeadTooLong => ((431, "Request Header Fields Too Large"), "burrowd: request head over 16 KiB\n"),
        Refusal::LoginRequired(_) => ((407, "Proxy Authentication Required"), "burrowd: proxy login required\n"),
        Refusal::Denied(_) | Refusal::Connect(ConnectError::Denied(_)) => {
            (FORBIDDEN, "burrowd: the access rules refuse this request\n")
        }
        Refusal::Connect(e) if timed_out(e) => (GATEWAY_TIMEOUT, "burrowd: the target did not answer in time\n"),
        Refusal::Connect(_) => (BAD_GATEWAY, "burrowd: cannot reach the target\n"),
        Refusal::BadResponse(_) => (BAD_GATEWAY, "burrowd: the target sent no valid response\n"),
        Refusal::ResponseTimedOut => (GATEWAY_TIMEOUT, "burrowd: the target did not answer in time\n"),
    };
    (code, reason, body)
}

/// A connect that ran out of time, here or at an upstream hop.
fn timed_out(e: &ConnectError) -> bool {
    let is_timeout = |e: &io::Error| matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock);
    match e {
        ConnectError::Connect { error, .. } => is_timeout(error),
        ConnectError::Upstream(failure) => match &failure.error {
            UpstreamError::Unreachable(e) => timed_out(e),
            UpstreamError::Handshake(crate::net::negotiation::HandshakeError::TimedOut) => true,
            UpstreamError::HttpStatus(status) => *status == 504,
            _ => false,
        },
        ConnectError::Resolve { .. } | ConnectError::Denied { .. } => false,
    }
}

/// The bytes of a reply: status line, headers, and `body`; the connection closes after it.
pub(super) fn response(code: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends the reply `refusal` earns, records it in the log, and closes.
pub(super) fn fail(mut negotiation: Negotiation, refusal: Refusal, log: &mut SessionLog) {
    let (code, reason, body) = status(&refusal);
    log.replied_http(code);
    let extra = match refusal {
        Refusal::LoginRequired(_) => "Proxy-Authenticate: Basic realm=\"burrowd\"\r\n",
        _ => "",
    };
    let unsent = negotiation.write(&response(code, reason, extra, body)).err();
    log.end = Some(match refusal {
        // As a failed SOCKS5 login is: the log and /metrics count it as one.
        Refusal::LoginRequired(user) => {
            End::LoginFailed { user: user.unwrap_or_else(|| "(none: no Proxy-Authorization: Basic)".into()) }
        }
        refusal => End::Replied(FailureReply { code: format!("HTTP {code}"), why: refusal.to_string(), unsent }),
    });
    close_after_reply(negotiation.stream());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::UpstreamFailure;
    use crate::wire::addr::TargetAddr;

    fn connect_failure(kind: io::ErrorKind) -> Refusal {
        Refusal::Connect(ConnectError::Connect { addr: "127.0.0.1:1".parse().unwrap(), error: kind.into() })
    }

    fn upstream(error: UpstreamError) -> Refusal {
        let proxy = TargetAddr::Ip("127.0.0.1:3128".parse().unwrap());
        let asked = TargetAddr::Domain("example.org".into(), 443);
        Refusal::Connect(ConnectError::Upstream(Box::new(UpstreamFailure {
            hop: 1,
            proxy,
            asked,
            for_target: true,
            error,
        })))
    }

    #[test]
    fn every_failure_has_its_status() {
        use io::ErrorKind::*;
        let table = [
            (Refusal::Malformed(wire::Error::BadHttp("bad method")), 400),
            (Refusal::NotAProxyRequest, 400),
            (Refusal::HeadTooLong, 431),
            (Refusal::LoginRequired(None), 407),
            (connect_failure(ConnectionRefused), 502),
            (connect_failure(HostUnreachable), 502),
            (connect_failure(TimedOut), 504),
            (Refusal::Connect(ConnectError::Resolve { name: "x.invalid".into(), error: NotFound.into() }), 502),
            (Refusal::Connect(ConnectError::Denied("127.0.0.1:1: denied by rule 1".into())), 403),
            (upstream(UpstreamError::Handshake(crate::net::negotiation::HandshakeError::TimedOut)), 504),
            (upstream(UpstreamError::LoginRejected), 502),
            (Refusal::BadResponse("closed".into()), 502),
            (Refusal::ResponseTimedOut, 504),
        ];
        for (refusal, code) in table {
            let (got, _, body) = status(&refusal);
            assert_eq!(got, code, "{refusal}");
            assert!(body.ends_with('\n') && body.matches('\n').count() == 1, "one line: {body:?}");
        }
    }

    #[test]
    fn a_reply_frames_its_body() {
        let bytes =
            response(407, "Proxy Authentication Required", "Proxy-Authenticate: Basic realm=\"burrowd\"\r\n", "x\n");
        let head_len = wire::http::head_len(&bytes).unwrap();
        let head = wire::http::ResponseHead::parse(&bytes[..head_len]).unwrap();
        assert_eq!(head.status, 407);
        assert_eq!(head.body_length("GET"), Ok(wire::http::BodyLength::Fixed(2)));
        assert_eq!(&bytes[head_len..], b"x\n");
    }
}
