//! gost-style URLs for services (`-L`) and upstream proxies (`-F`): pure parsing, no I/O.
//!
//! ```text
//! socks://[USER:PASS@]HOST:PORT        SOCKS4/4a/5 server
//! socks5://[USER:PASS@]HOST:PORT       SOCKS5 only
//! http://[USER:PASS@]HOST:PORT         HTTP proxy only
//! tcp://HOST:PORT/TARGET_HOST:TARGET_PORT
//! udp://HOST:PORT/TARGET_HOST:TARGET_PORT[?ttl=DUR]
//! any service URL: ?bind-out=IP|same (repeatable) &interface=NAME
//! -F socks5://[USER:PASS@]HOST:PORT    one upstream hop
//! -F http://[USER:PASS@]HOST:PORT      one upstream HTTP proxy, reached with CONNECT
//! ```
//!
//! A listening HOST may be empty (all IPv4 addresses), an IPv4 address, or an IPv6
//! address in brackets; a target or upstream HOST may also be a domain name, which stays
//! a name until whoever connects to it resolves it. USER and PASS may be percent-encoded, and
//! PASS may hold '@', '/' and '?' as they are: the last '@' ends it.

use super::egress::Egress;
use super::units::parse_duration;
use super::users::Users;
use super::{
    Credentials, DEFAULT_UDP_TTL, Hop, HopKind, ServiceSpec, Socks4Policy, SocksSpec, TcpForwardSpec, UdpForwardSpec,
};
use crate::wire::addr::{self, TargetAddr};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Why a URL is not a service or hop burrowd can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// No `SCHEME://` in front.
    NoScheme,
    /// A scheme this flag does not know; carries the scheme and the ones it does know.
    UnknownScheme(String, &'static str),
    /// USER:PASS that is not two parts, has an empty name, is too long or badly encoded.
    BadCredentials(&'static str),
    /// Credentials on a service that cannot check them (a forwarder).
    UnexpectedCredentials,
    /// A HOST that is not allowed where it stands (a name to listen on, junk).
    BadHost(String),
    /// No `:PORT` after the host.
    MissingPort,
    /// A PORT that is not a number from 1 (0 for listening) to 65535.
    BadPort(String),
    /// A forwarder without its `/TARGET_HOST:TARGET_PORT`.
    MissingTarget,
    /// A `/PATH` on a URL that takes none (a SOCKS service, an upstream hop).
    UnexpectedPath(String),
    /// A `ttl=` that is not a duration above zero.
    BadTtl(String),
    /// A `bind-out=` or `interface=` that is not what `--bind-out` or `--interface` takes.
    BadEgress(String),
    /// A `?KEY=VALUE` this URL does not take.
    UnknownOption(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NoScheme => write!(f, "missing scheme (like socks5://)"),
            UrlError::UnknownScheme(scheme, known) => write!(f, "unknown scheme {scheme:?} (use {known})"),
            UrlError::BadCredentials(why) => write!(f, "bad USER:PASS: {why}"),
            UrlError::UnexpectedCredentials => write!(f, "a forwarder takes no USER:PASS"),
            UrlError::BadHost(why) => write!(f, "bad host: {why}"),
            UrlError::MissingPort => write!(f, "missing :PORT"),
            UrlError::BadPort(port) => write!(f, "bad port {port:?}"),
            UrlError::MissingTarget => write!(f, "missing target (add /TARGET_HOST:TARGET_PORT)"),
            UrlError::UnexpectedPath(path) => write!(f, "unexpected path {path:?}"),
            UrlError::BadTtl(why) => write!(f, "bad ttl: {why}"),
            UrlError::BadEgress(why) => write!(f, "{why}"),
            UrlError::UnknownOption(option) => write!(f, "unknown option {option:?}"),
        }
    }
}

impl std::error::Error for UrlError {}

const SERVICE_SCHEMES: &str = "socks, socks5, http, tcp or udp";
const HOP_SCHEMES: &str = "socks5 or http";

/// Parses a `-L` URL into the service it describes.
pub fn parse_service(text: &str) -> Result<ServiceSpec, UrlError> {
    let url = Parts::split(text)?;
    match url.scheme {
        "socks" | "socks5" | "http" => {
            url.no_path()?;
            let mut spec = SocksSpec::new(listen_addr(url.host_port)?);
            for (key, value) in url.options() {
                egress_option(&mut spec.egress, key, value)?;
            }
            if let Some(credentials) = url.credentials()? {
                spec.users = one_user(&credentials)?;
            }
            match url.scheme {
                "socks5" => {
                    spec.socks4 = Socks4Policy::Off;
                    spec.http = false;
                }
                "http" => {
                    spec.socks4 = Socks4Policy::Off;
                    spec.socks5 = false;
                }
                _ => {}
            }
            Ok(ServiceSpec::Socks(spec))
        }
        "tcp" => {
            url.no_credentials()?;
            let mut egress = Egress::default();
            for (key, value) in url.options() {
                egress_option(&mut egress, key, value)?;
            }
            Ok(ServiceSpec::TcpForward(TcpForwardSpec {
                addr: listen_addr(url.host_port)?,
                target: remote_addr(url.target()?)?,
                egress,
            }))
        }
        "udp" => {
            url.no_credentials()?;
            let (mut ttl, mut egress) = (DEFAULT_UDP_TTL, Egress::default());
            for (key, value) in url.options() {
                match key {
                    "ttl" => ttl = parse_ttl(value)?,
                    _ => egress_option(&mut egress, key, value)?,
                }
            }
            Ok(ServiceSpec::UdpForward(UdpForwardSpec {
                addr: listen_addr(url.host_port)?,
                target: remote_addr(url.target()?)?,
                ttl,
                egress,
            }))
        }
        other => Err(UrlError::UnknownScheme(other.into(), SERVICE_SCHEMES)),
    }
}

/// Parses a `-F` URL into one upstream hop.
pub fn parse_hop(text: &str) -> Result<Hop, UrlError> {
    let url = Parts::split(text)?;
    let kind = match url.scheme {
        "socks5" => HopKind::Socks5,
        "http" => HopKind::Http,
        other => return Err(UrlError::UnknownScheme(other.into(), HOP_SCHEMES)),
    };
    url.no_path()?;
    url.no_options()?;
    let credentials = url.credentials()?;
    if let Some(credentials) = &credentials {
        // The same bounds RFC 1929 puts on the wire, checked now rather than per connection.
        one_user(credentials)?;
    }
    Ok(Hop { kind, addr: remote_addr(url.host_port)?, credentials })
}

/// The URL with whatever may be a password replaced by `***`, for error messages and logs,
/// however malformed the URL is. The user part ends at the last '@', as [`Parts::split`]
/// finds it, and starts after `SCHEME://` (or at the start, with no scheme or a mangled
/// one); its password follows its first ':'. With no '@' at all, a ':' that is not
/// followed by a port number (`socks5://alice:secret`: the '@' and host forgotten) starts
/// what is hidden, to the end.
pub fn redacted(text: &str) -> String {
    let after_scheme = text.find("://").map_or(0, |i| i + 3);
    let hidden_from = match text.rfind('@') {
        Some(at) => {
            let start = if after_scheme <= at { after_scheme } else { 0 };
            text[start..at].find(':').map(|colon| (start + colon, &text[at..]))
        }
        None => {
            let rest = &text[after_scheme..];
            let authority = rest.split(['/', '?']).next().unwrap_or(rest);
            match authority.split_once(':') {
                _ if rest.starts_with('[') => None,
                Some((host, port)) if !port.is_empty() && !port.bytes().all(|b| b.is_ascii_digit()) => {
                    Some((after_scheme + host.len(), ""))
                }
                _ => None,
            }
        }
    };
    match hidden_from {
        Some((colon, kept)) => format!("{}:***{kept}", &text[..colon]),
        None => text.into(),
    }
}

/// Splits what follows `SCHEME://` at its last '@', which ends the user part: no host,
/// target or option may hold an '@', while a password may hold '@', '/' and '?' raw.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    }
}

/// A URL cut at its delimiters, nothing interpreted yet.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host_port: &'a str,
    path: Option<&'a str>,
    query: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(text: &'a str) -> Result<Self, UrlError> {
        let (scheme, rest) = text.split_once("://").ok_or(UrlError::NoScheme)?;
        if scheme.is_empty() {
            return Err(UrlError::NoScheme);
        }
        let (userinfo, rest) = split_userinfo(rest);
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (host_port, path) = match rest.split_once('/') {
            Some((host_port, path)) => (host_port, Some(path)),
            None => (rest, None),
        };
        Ok(Parts { scheme, userinfo, host_port, path, query })
    }

    fn credentials(&self) -> Result<Option<Credentials>, UrlError> {
        let Some(userinfo) = self.userinfo else {
            return Ok(None);
        };
        // Split before decoding: an encoded ':' (%3A) belongs to the part it is in.
        let (user, password) = userinfo.split_once(':').ok_or(UrlError::BadCredentials("expected USER:PASS"))?;
        Ok(Some(Credentials { user: percent_decode(user)?, password: percent_decode(password)? }))
    }

    fn no_credentials(&self) -> Result<(), UrlError> {
        match self.userinfo {
            Some(_) => Err(UrlError::UnexpectedCredentials),
            None => Ok(()),
        }
    }

    fn target(&self) -> Result<&'a str, UrlError> {
        match self.path {
            Some(path) if !path.is_empty() => Ok(path),
            _ => Err(UrlError::MissingTarget),
        }
    }

    fn no_path(&self) -> Result<(), UrlError> {
        match self.path {
            Some(path) if !path.is_empty() => Err(UrlError::UnexpectedPath(path.into())),
            _ => Ok(()),
        }
    }

    /// `KEY=VALUE` pairs; a bare `KEY` has an empty value.
    fn options(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let pairs = self.query.unwrap_or("").split('&').filter(|pair| !pair.is_empty());
        pairs.map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }

    fn no_options(&self) -> Result<(), UrlError> {
        match self.options().next() {
            Some((key, _)) => Err(UrlError::UnknownOption(key.into())),
            None => Ok(()),
        }
    }
}

/// A user table holding exactly these credentials, with RFC 1929's length bounds.
fn one_user(credentials: &Credentials) -> Result<Users, UrlError> {
    let mut users = Users::default();
    users
        .add(&credentials.user, &credentials.password)
        .map_err(|_| UrlError::BadCredentials("USER and PASS must be 1 to 255 bytes each (RFC 1929)"))?;
    Ok(users)
}

/// Takes `bind-out=` and `interface=`, the options every service has; any other key is
/// one this URL does not know.
fn egress_option(egress: &mut Egress, key: &str, value: &str) -> Result<(), UrlError> {
    let set = match key {
        "bind-out" => egress.add_bind_out(value),
        "interface" => egress.set_interface(value),
        _ => return Err(UrlError::UnknownOption(key.into())),
    };
    set.map_err(|why| UrlError::BadEgress(format!("{key}: {why}")))
}

fn parse_ttl(text: &str) -> Result<Duration, UrlError> {
    match parse_duration(text) {
        Ok(ttl) if ttl.is_zero() => Err(UrlError::BadTtl("must be more than 0".into())),
        Ok(ttl) => Ok(ttl),
        Err(e) => Err(UrlError::BadTtl(e)),
    }
}

/// `HOST:PORT` to listen on: HOST must be an address, or empty for all IPv4 addresses.
fn listen_addr(text: &str) -> Result<SocketAddr, UrlError> {
    let (host, port) = split_host_port(text)?;
    let port = parse_port(port, 0)?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        host => host.parse().map_err(|_| UrlError::BadHost(format!("{host:?} is not an IP address to listen on")))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// `HOST:PORT` to reach: an address, or a domain name left for the connecting side to resolve.
fn remote_addr(text: &str) -> Result<TargetAddr, UrlError> {
    let (host, port) = split_host_port(text)?;
    let port = parse_port(port, 1)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(TargetAddr::Ip(SocketAddr::new(ip, port)));
    }
    // The same test as a client's name gets: a name a resolver might read otherwise is refused at start-up.
    if addr::host_name(host).is_err() {
        return Err(UrlError::BadHost(format!("{host:?} is not an IP address or domain name")));
    }
    Ok(TargetAddr::Domain(host.into(), port))
}

/// Splits `HOST:PORT` or `[IPV6]:PORT`; the brackets are removed.
fn split_host_port(text: &str) -> Result<(&str, &str), UrlError> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| UrlError::BadHost(format!("{text:?} has no closing ']'")))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlError::BadHost(format!("[{host}] is not an IPv6 address")));
        }
        let port = after.strip_prefix(':').ok_or(UrlError::MissingPort)?;
        return Ok((host, port));
    }
    let (host, port) = text.rsplit_once(':').ok_or(UrlError::MissingPort)?;
    if host.contains(':') {
        return Err(UrlError::BadHost(format!("{host:?}: put an IPv6 address in brackets, like [::1]")));
    }
    Ok((host, port))
}

fn parse_port(text: &str, min: u16) -> Result<u16, UrlError> {
    match text.parse::<u16>() {
        Ok(port) if port >= min && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ if text.is_empty() => Err(UrlError::MissingPort),
        _ => Err(UrlError::BadPort(text.into())),
    }
}

/// Decodes `%XX` escapes into the bytes RFC 1929 carries, so a name can hold a ':' and
/// either part any byte.
fn percent_decode(text: &str) -> Result<Vec<u8>, UrlError> {
    const BAD_ESCAPE: UrlError = UrlError::BadCredentials("bad %XX escape");
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok()).ok_or(BAD_ESCAPE)?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| BAD_ESCAPE)?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socks(text: &str) -> SocksSpec {
        match parse_service(text) {
            Ok(ServiceSpec::Socks(spec)) => spec,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn socks_services() {
        let spec = socks("socks://:1080");
        assert_eq!(spec.addr, "0.0.0.0:1080".parse().unwrap());
        assert!(!spec.users.require_login());
        assert_eq!(spec.socks4, Socks4Policy::Auto);

        let spec = socks("socks5://alice:s%3Acret%40x@[::1]:0");
        assert_eq!(spec.addr, "[::1]:0".parse().unwrap());
        assert!(spec.users.verify(b"alice", b"s:cret@x"), "percent-decoded password");
        assert_eq!(spec.socks4, Socks4Policy::Off);

        // a raw '@' in the password: the last '@' ends the user part
        assert!(socks("socks://bob:p@ss@127.0.0.1:1").users.verify(b"bob", b"p@ss"));
        assert_eq!(socks("socks://127.0.0.1:1080/").addr.port(), 1080, "an empty path is no path");
    }

    #[test]
    fn forwarders() {
        let Ok(ServiceSpec::TcpForward(tcp)) = parse_service("tcp://127.0.0.1:8080/example.org:80") else {
            panic!("tcp");
        };
        assert_eq!(tcp.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(tcp.target, TargetAddr::Domain("example.org".into(), 80));

        let Ok(ServiceSpec::UdpForward(udp)) = parse_service("udp://:5353/[::1]:53?ttl=1.5s") else {
            panic!("udp");
        };
        assert_eq!(udp.addr, "0.0.0.0:5353".parse().unwrap());
        assert_eq!(udp.target, TargetAddr::Ip("[::1]:53".parse().unwrap()));
        assert_eq!(udp.ttl, Duration::from_millis(1500));

        let Ok(ServiceSpec::UdpForward(udp)) = parse_service("udp://127.0.0.1:0/10.0.0.255:9") else {
            panic!("udp default ttl");
        };
        assert_eq!(udp.ttl, DEFAULT_UDP_TTL);
    }

    #[test]
    fn every_service_takes_its_own_egress() {
        use crate::config::egress::BindOut;
        let spec = socks("socks://:1081?bind-out=192.0.2.7&bind-out=2001:db8::7&interface=wg0");
        let v4 = Some("192.0.2.7".parse().unwrap());
        let v6 = Some("2001:db8::7".parse().unwrap());
        assert_eq!(spec.egress.bind, Some(BindOut::Addrs { v4, v6 }));
        assert_eq!(spec.egress.interface.as_deref(), Some("wg0"));
        let Ok(ServiceSpec::TcpForward(tcp)) = parse_service("tcp://:1/h:1?bind-out=same") else { panic!("tcp") };
        assert_eq!(tcp.egress.bind, Some(BindOut::Same));
        let Ok(ServiceSpec::UdpForward(udp)) = parse_service("udp://:1/h:1?interface=eth1&ttl=5s") else {
            panic!("udp");
        };
        assert_eq!((udp.egress.interface.as_deref(), udp.ttl), (Some("eth1"), Duration::from_secs(5)));
        assert!(socks("socks5://:1080").egress.is_default());
    }

    #[test]
    fn hops() {
        let hop = parse_hop("socks5://proxy.example:1080").unwrap();
        assert_eq!(
            hop,
            Hop { kind: HopKind::Socks5, addr: TargetAddr::Domain("proxy.example".into(), 1080), credentials: None }
        );
        let hop = parse_hop("socks5://u:p%2Fq@127.0.0.1:1081").unwrap();
        assert_eq!(hop.credentials, Some(Credentials { user: b"u".to_vec(), password: b"p/q".to_vec() }));
        assert_eq!(hop.to_string(), "socks5://u@127.0.0.1:1081", "display hides the password");
        let hop = parse_hop("http://u:p@[::1]:3128").unwrap();
        assert_eq!((hop.kind, hop.to_string()), (HopKind::Http, "http://u@[::1]:3128".into()));
    }

    #[test]
    fn which_protocols_each_proxy_scheme_serves() {
        let protocols = |text| {
            let spec = socks(text);
            (spec.socks5, spec.socks4, spec.http)
        };
        assert_eq!(protocols("socks://:1080"), (true, Socks4Policy::Auto, true), "a mixed port");
        assert_eq!(protocols("socks5://:1080"), (true, Socks4Policy::Off, false));
        assert_eq!(protocols("http://:8080"), (false, Socks4Policy::Off, true));
        assert!(socks("http://u:p@127.0.0.1:8080").users.verify(b"u", b"p"));
    }

    #[test]
    fn credentials_stay_a_user_and_a_password_from_url_to_wire() {
        // An encoded ':' belongs to the user, not to the split between user and password.
        let spec = socks("socks://a%3Ab:pw@127.0.0.1:1");
        assert!(spec.users.verify(b"a:b", b"pw"));
        assert!(!spec.users.verify(b"a", b"b:pw"));
        let hop = parse_hop("socks5://a%3Ab:p%3Aw@127.0.0.1:1").unwrap();
        assert_eq!(hop.credentials, Some(Credentials { user: b"a:b".to_vec(), password: b"p:w".to_vec() }));
        // Any byte may go on the wire.
        assert!(socks("socks://u:%ff@127.0.0.1:1").users.verify(b"u", b"\xff"));
        // A password with a raw '/' or '?': the last '@' ends it.
        let hop = parse_hop("socks5://alice:top/se?cret@host:1080").unwrap();
        assert_eq!(hop.addr, TargetAddr::Domain("host".into(), 1080));
        assert_eq!(hop.credentials.unwrap().password, b"top/se?cret");
    }

    #[test]
    fn a_hop_user_too_long_for_the_wire_is_refused_however_it_is_encoded() {
        // 256 bytes once decoded; joined with the empty password as "a:x...x:" and split at
        // the first ':' it once looked like a 1-byte user and a 255-byte password.
        let url = format!("socks5://a%3A{}:@127.0.0.1:1080", "x".repeat(254));
        let want = UrlError::BadCredentials("USER and PASS must be 1 to 255 bytes each (RFC 1929)");
        assert_eq!(parse_hop(&url).unwrap_err(), want);
        let url = format!("socks5://{}:pw@127.0.0.1:1080", "%41".repeat(256));
        assert_eq!(parse_hop(&url).unwrap_err(), want);
    }

    fn egress_error(why: &str) -> UrlError {
        UrlError::BadEgress(why.into())
    }

    #[test]
    fn bad_service_urls_say_what_is_wrong() {
        let long = format!("socks://{}:p@:1", "u".repeat(256));
        let table: &[(&str, UrlError)] = &[
            ("127.0.0.1:1080", UrlError::NoScheme),
            ("://:1080", UrlError::NoScheme),
            ("https://:8080", UrlError::UnknownScheme("https".into(), SERVICE_SCHEMES)),
            ("socks4://:1080", UrlError::UnknownScheme("socks4".into(), SERVICE_SCHEMES)),
            ("tcp://:8080", UrlError::MissingTarget),
            ("tcp://:8080/", UrlError::MissingTarget),
            ("udp://:5353?ttl=5s", UrlError::MissingTarget),
            ("tcp://:8080/example.org", UrlError::MissingPort),
            ("tcp://:8080/example.org:0", UrlError::BadPort("0".into())),
            ("tcp://:8080/example.org:65536", UrlError::BadPort("65536".into())),
            ("tcp://:8080/example.org:+80", UrlError::BadPort("+80".into())),
            ("tcp://:http/example.org:80", UrlError::BadPort("http".into())),
            ("socks://:", UrlError::MissingPort),
            ("socks://127.0.0.1", UrlError::MissingPort),
            ("socks://[::1]", UrlError::MissingPort),
            ("socks://localhost:1080", UrlError::BadHost("\"localhost\" is not an IP address to listen on".into())),
            ("socks://::1:1080", UrlError::BadHost("\"::1\": put an IPv6 address in brackets, like [::1]".into())),
            ("socks://[::1:1080", UrlError::BadHost("\"[::1:1080\" has no closing ']'".into())),
            ("socks://[example]:1080", UrlError::BadHost("[example] is not an IPv6 address".into())),
            ("tcp://:1/exa mple:80", UrlError::BadHost("\"exa mple\" is not an IP address or domain name".into())),
            ("tcp://:1/:80", UrlError::BadHost("\"\" is not an IP address or domain name".into())),
            ("tcp://:1/a..b:80", UrlError::BadHost("\"a..b\" is not an IP address or domain name".into())),
            (
                "udp://:1/x.example..:53",
                UrlError::BadHost("\"x.example..\" is not an IP address or domain name".into()),
            ),
            ("socks://:1080/extra", UrlError::UnexpectedPath("extra".into())),
            ("socks://:1080?ttl=5s", UrlError::UnknownOption("ttl".into())),
            ("tcp://:1/h:1?ttl=5s", UrlError::UnknownOption("ttl".into())),
            ("udp://:1/h:1?tll=5s", UrlError::UnknownOption("tll".into())),
            ("udp://:1/h:1?ttl=0", UrlError::BadTtl("must be more than 0".into())),
            ("udp://:1/h:1?ttl=", UrlError::BadTtl("\"\" is not a duration".into())),
            ("udp://:1/h:1?ttl=5d", UrlError::BadTtl("\"5d\" has unknown unit \"d\" (use ms, s, m or h)".into())),
            (
                "socks://:1?bind-out=10.0.0.1&bind-out=10.0.0.2",
                egress_error("bind-out: at most one IPv4 and one IPv6 address"),
            ),
            ("tcp://:1/h:1?bind-out=eth0", egress_error("bind-out: \"eth0\" is not an IP address or \"same\"")),
            (
                "udp://:1/h:1?interface=",
                egress_error("interface: \"\" is not an interface name (1 to 15 characters, no '/')"),
            ),
            ("tcp://u:p@:1/h:1", UrlError::UnexpectedCredentials),
            ("socks://alice@:1080", UrlError::BadCredentials("expected USER:PASS")),
            ("socks://:pw@:1080", UrlError::BadCredentials("USER and PASS must be 1 to 255 bytes each (RFC 1929)")),
            ("socks://u:@:1080", UrlError::BadCredentials("USER and PASS must be 1 to 255 bytes each (RFC 1929)")),
            (&long, UrlError::BadCredentials("USER and PASS must be 1 to 255 bytes each (RFC 1929)")),
            ("socks://u:%zz@:1080", UrlError::BadCredentials("bad %XX escape")),
            ("socks://u:%4@:1080", UrlError::BadCredentials("bad %XX escape")),
        ];
        for (text, want) in table {
            assert_eq!(parse_service(text).unwrap_err(), *want, "{text}");
            assert!(!want.to_string().contains('\n'));
        }
    }

    #[test]
    fn bad_hop_urls_say_what_is_wrong() {
        let table: &[(&str, UrlError)] = &[
            ("127.0.0.1:1080", UrlError::NoScheme),
            ("socks://127.0.0.1:1080", UrlError::UnknownScheme("socks".into(), HOP_SCHEMES)),
            ("https://127.0.0.1:3128", UrlError::UnknownScheme("https".into(), HOP_SCHEMES)),
            ("socks5://127.0.0.1", UrlError::MissingPort),
            ("socks5://127.0.0.1:0", UrlError::BadPort("0".into())),
            ("socks5://:1080", UrlError::BadHost("\"\" is not an IP address or domain name".into())),
            ("socks5://127.0.0.1:1080/x:1", UrlError::UnexpectedPath("x:1".into())),
            ("socks5://127.0.0.1:1080?ttl=1s", UrlError::UnknownOption("ttl".into())),
            ("socks5://127.0.0.1:1080?bind-out=same", UrlError::UnknownOption("bind-out".into())),
            ("socks5://user@127.0.0.1:1080", UrlError::BadCredentials("expected USER:PASS")),
        ];
        for (text, want) in table {
            assert_eq!(parse_hop(text).unwrap_err(), *want, "{text}");
        }
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(redacted("socks5://u:secret@h:1"), "socks5://u:***@h:1");
        assert_eq!(redacted("socks5://u:p@ss@h:1/x"), "socks5://u:***@h:1/x");
        assert_eq!(redacted("tcp://:1/h:2"), "tcp://:1/h:2");
        assert_eq!(redacted("garbage"), "garbage");
        // Malformed: no scheme, a mangled one, the '@' forgotten, a scheme after the '@'.
        assert_eq!(redacted("alice:Sup3rSecret@proxy.example:1080"), "alice:***@proxy.example:1080");
        assert_eq!(redacted("socks5:/alice:Sup3rSecret@proxy.example:1080"), "socks5:***@proxy.example:1080");
        assert_eq!(redacted("socks5://alice:Sup3r/Secret"), "socks5://alice:***");
        assert_eq!(redacted("socks5://alice:Sup3rSecret proxy:1080"), "socks5://alice:***");
        assert_eq!(redacted("alice:Sup3rSecret@h:1://x"), "alice:***@h:1://x");
        assert_eq!(redacted("socks5://[::1]:1080"), "socks5://[::1]:1080");
        assert_eq!(redacted("udp://:5353/[::1]:53?ttl=1s"), "udp://:5353/[::1]:53?ttl=1s");
        // Whatever the parser could take for a password, '/' and '?' included.
        assert_eq!(redacted("socks5://alice:top/secret@host:1080"), "socks5://alice:***@host:1080");
        assert_eq!(redacted("socks5://alice:top?secret@host"), "socks5://alice:***@host");
    }
}
