//! Where one session's outbound sockets leave from: the source address of each family and
//! the interface, as its service's `--bind-out` and `--interface` settle them for that
//! session. Every outbound socket (a connect, a BIND listener, a UDP socket toward targets)
//! is prepared here before it connects or binds, and only the families allowed are used:
//! a bind that fails is an error, never a quiet fallback to the routing table's choice.

use super::ConnectError;
use crate::config::UdpOptions;
use crate::config::egress::{BindOut, Egress as EgressSpec};
use crate::net::sockopt;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;

/// One session's outbound settings. The default leaves everything to the routing table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Egress {
    /// The source of each family's sockets, IPv4 then IPv6 (port 0); a family without one
    /// is not used. `None`: the routing table chooses, for either family.
    sources: Option<[Option<SocketAddr>; 2]>,
    interface: Option<Arc<str>>,
}

impl Egress {
    /// What `spec` means for a session whose client reached us at `ingress` (for `udp://`,
    /// the service's own address).
    pub(crate) fn for_session(spec: &EgressSpec, ingress: SocketAddr) -> Egress {
        let sources = spec.bind.map(|bind| match bind {
            BindOut::Addrs { v4, v6 } => {
                [v4.map(|ip| SocketAddr::new(ip.into(), 0)), v6.map(|ip| SocketAddr::new(ip.into(), 0))]
            }
            BindOut::Same => {
                // The whole socket address: a link-local IPv6 address binds only with its
                // scope. An IPv4 client of a dual-stack socket shows up as ::ffff:a.b.c.d.
                let mut source = ingress;
                source.set_ip(ingress.ip().to_canonical());
                source.set_port(0);
                if source.is_ipv6() { [None, Some(source)] } else { [Some(source), None] }
            }
        });
        Egress { sources, interface: spec.interface.clone() }
    }

    /// [`Egress::for_session`] for a TCP client: `ingress` is the address it reached where
    /// already known (the listener's, or read at accept), else read from its socket.
    pub(crate) fn for_client(spec: &EgressSpec, ingress: Option<SocketAddr>, client: &TcpStream) -> io::Result<Egress> {
        Ok(Egress::for_session(spec, ingress.map_or_else(|| client.local_addr(), Ok)?))
    }

    /// Whether targets of `ip`'s family may be reached.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        self.source(ip.is_ipv6()).is_ok()
    }

    /// Where a socket of a family leaves from: `None` for the routing table's choice; an
    /// error (network unreachable, so SOCKS reply 3) for a family that is not used.
    pub(crate) fn source(&self, ipv6: bool) -> io::Result<Option<SocketAddr>> {
        match self.sources {
            None => Ok(None),
            Some(sources) => sources[usize::from(ipv6)].map(Some).ok_or_else(|| {
                let (family, other) = if ipv6 { ("IPv6", "IPv4") } else { ("IPv4", "IPv6") };
                io::Error::new(
                    io::ErrorKind::NetworkUnreachable,
                    format!("no {family} source address: --bind-out allows {other} only"),
                )
            }),
        }
    }

    /// Whether outbound sockets are bound to an interface.
    pub(crate) fn has_interface(&self) -> bool {
        self.interface.is_some()
    }

    /// Of `addrs` (a name's resolved addresses, in order), those of a family that may be
    /// used; an error naming the first if none may.
    pub(crate) fn reachable(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, ConnectError> {
        let Some(&first) = addrs.first() else { return Ok(addrs) };
        let kept: Vec<SocketAddr> = addrs.into_iter().filter(|addr| self.allows(addr.ip())).collect();
        if kept.is_empty() {
            return Err(ConnectError::Connect { addr: first, error: self.source(first.is_ipv6()).unwrap_err() });
        }
        Ok(kept)
    }

    /// Readies a TCP socket of a family for its connect: bound to the interface and to the
    /// source address.
    pub(crate) fn prepare(&self, socket: &Socket, ipv6: bool) -> io::Result<()> {
        self.bind_interface(socket, ipv6)?;
        if let Some(source) = self.source(ipv6)? {
            sockopt::bind_source(socket, source).map_err(|e| bind_failed(source.ip(), e))?;
        }
        Ok(())
    }

    /// Binds `socket` to the interface, if one is set. The error names it, and is not one
    /// a SOCKS reply reads as the target's doing: it is reply 1, like any local failure.
    pub(crate) fn bind_interface(&self, socket: &Socket, ipv6: bool) -> io::Result<()> {
        match &self.interface {
            Some(name) => sockopt::bind_device(socket, ipv6, name)
                .map_err(|e| io::Error::other(format!("cannot bind to interface {name}: {e}"))),
            None => Ok(()),
        }
    }

    /// A UDP socket toward targets of a family: bound to its source (or the wildcard
    /// address, for the routing table to choose) and to the interface.
    pub(crate) fn udp_socket(&self, ipv6: bool, opts: &UdpOptions) -> io::Result<UdpSocket> {
        let any = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let local = self.source(ipv6)?.unwrap_or(SocketAddr::new(any, 0));
        self.udp_bind(local, opts)
    }

    /// A UDP socket bound to `local` (chosen by the caller, as our end of a TCP connection
    /// already prepared here) and to the interface.
    pub(crate) fn udp_bind(&self, local: SocketAddr, opts: &UdpOptions) -> io::Result<UdpSocket> {
        sockopt::udp_bind_prepared(local, opts, |socket| self.bind_interface(socket, local.is_ipv6()))
            .map_err(|e| if e.kind() == io::ErrorKind::AddrNotAvailable { bind_failed(local.ip(), e) } else { e })
    }
}

/// Tries at start-up what `spec` will ask of every outbound socket, so an address this
/// host does not have or an interface it lacks stops the start rather than every session.
/// `same` is tried with each session's own address, at run time.
pub(crate) fn probe(spec: &EgressSpec) -> io::Result<()> {
    let mut families = vec![];
    match spec.bind {
        Some(BindOut::Addrs { v4, v6 }) => {
            families.extend(v4.map(|ip| SocketAddr::new(ip.into(), 0)));
            families.extend(v6.map(|ip| SocketAddr::new(ip.into(), 0)));
        }
        Some(BindOut::Same) | None => families.push(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
    }
    let egress = Egress { sources: None, interface: spec.interface.clone() };
    for local in families {
        let socket = Socket::new(Domain::for_address(local), Type::STREAM, None)?;
        egress.bind_interface(&socket, local.is_ipv6())?;
        socket.bind(&local.into()).map_err(|e| bind_failed(local.ip(), e))?;
    }
    Ok(())
}

fn bind_failed(source: IpAddr, e: io::Error) -> io::Error {
    io::Error::other(format!("cannot bind to source address {source}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::TcpListener;

    fn spec(bind_outs: &[&str]) -> EgressSpec {
        let mut spec = EgressSpec::default();
        for value in bind_outs {
            spec.add_bind_out(value).unwrap();
        }
        spec
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_family_given_keeps_the_other_out() {
        let egress = Egress::for_session(&spec(&["127.0.0.2"]), addr("[::1]:1080"));
        assert!(egress.allows("127.0.0.1".parse().unwrap()));
        assert!(!egress.allows("::1".parse().unwrap()));
        let kept = egress.reachable(vec![addr("[::1]:80"), addr("127.0.0.1:80"), addr("[::2]:80")]).unwrap();
        assert_eq!(kept, [addr("127.0.0.1:80")]);
        let refused = egress.reachable(vec![addr("[::1]:80")]).unwrap_err();
        assert!(
            matches!(&refused, ConnectError::Connect { addr: a, error } if *a == addr("[::1]:80")
                && error.kind() == io::ErrorKind::NetworkUnreachable),
            "{refused}"
        );
        assert_eq!(refused.to_string(), "connect to [::1]:80: no IPv6 source address: --bind-out allows IPv4 only");
        let any = Egress::default();
        assert!(any.allows("::1".parse().unwrap()) && any.source(true).unwrap().is_none());
    }

    #[test]
    fn same_is_the_address_the_client_reached() {
        let egress = Egress::for_session(&spec(&["same"]), addr("[::ffff:127.0.0.3]:1080"));
        assert_eq!(egress.source(false).unwrap(), Some(addr("127.0.0.3:0")));
        assert!(!egress.allows("::1".parse().unwrap()));
        let egress = Egress::for_session(&spec(&["same"]), addr("[::1]:1080"));
        assert_eq!(egress.source(true).unwrap(), Some(addr("[::1]:0")));
        assert!(!egress.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_prepared_socket_connects_from_its_source() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let egress = Egress::for_session(&spec(&["127.0.0.2"]), addr("127.0.0.1:1080"));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        egress.prepare(&socket, false).unwrap();
        socket.connect(&target.into()).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        let udp = egress.udp_socket(false, &Config::default().udp).unwrap();
        assert_eq!(udp.local_addr().unwrap().ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_this_host_lacks_fails_the_probe_and_the_socket() {
        // TEST-NET-1: on no interface of a test machine.
        let absent = spec(&["192.0.2.77"]);
        let err = probe(&absent).unwrap_err();
        assert!(err.to_string().starts_with("cannot bind to source address 192.0.2.77: "), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::Other, "reply 1, not one about the target");
        let egress = Egress::for_session(&absent, addr("127.0.0.1:1080"));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        assert_eq!(egress.prepare(&socket, false).unwrap_err().kind(), io::ErrorKind::Other);
        probe(&spec(&["127.0.0.2", "::1"])).unwrap();
    }

    #[test]
    fn an_interface_this_host_lacks_fails_the_probe() {
        let mut missing = EgressSpec::default();
        missing.set_interface("nosuchif0").unwrap();
        let err = probe(&missing).unwrap_err();
        assert!(err.to_string().starts_with("cannot bind to interface nosuchif0: "), "{err}");
    }
}
