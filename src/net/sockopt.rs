//! Every socket option burrowd sets, in one place, through socket2.

use crate::config::{ClientTimeouts, SocketOptions, UdpOptions};
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Pending connections the kernel holds for each listener before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Opens a listener that holds its address alone (see [`claim_address`]). An IPv6
/// listener is IPv6-only, so `[::]:1080` and `0.0.0.0:1080` can both be given.
///
/// The listener carries the stream options too, and the timeouts a client starts with
/// (`client`). Linux makes each accepted socket a clone of its listener, options included,
/// so an accepted client costs no setsockopt (six fewer system calls per session) and its
/// buffer sizes are in place when the handshake negotiates window scaling. See
/// [`tune_client`].
pub(crate) fn listen(addr: SocketAddr, opts: &SocketOptions, client: ClientTimeouts) -> io::Result<TcpListener> {
    listen_prepared(addr, opts, |socket| set_client_timeouts(&SockRef::from(socket), client))
}

/// [`listen`], with `prepare` run on the socket before it is bound (to bind it to an
/// interface).
pub(crate) fn listen_prepared(
    addr: SocketAddr,
    opts: &SocketOptions,
    prepare: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    prepare(&socket)?;
    claim_address(&socket)?;
    tune(&SockRef::from(&socket), opts)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// On unix, SO_REUSEADDR: a restart need not wait out the old connections' TIME_WAIT,
/// and a port another socket listens on still cannot be bound.
#[cfg(unix)]
fn claim_address(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_address(true)
}

/// On Windows, SO_REUSEADDR would let a second socket bind a port already in use and take
/// connections meant for the first, so it is left off; SO_EXCLUSIVEADDRUSE also keeps
/// any other socket that sets SO_REUSEADDR off the port.
#[cfg(windows)]
#[allow(unsafe_code)] // setsockopt(SO_EXCLUSIVEADDRUSE) has no safe wrapper in std or socket2
fn claim_address(socket: &Socket) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    const SOL_SOCKET: i32 = 0xffff;
    /// `~SO_REUSEADDR` in winsock2.h.
    const SO_EXCLUSIVEADDRUSE: i32 = !4;
    #[link(name = "ws2_32")]
    unsafe extern "system" {
        fn setsockopt(socket: usize, level: i32, name: i32, value: *const u8, len: i32) -> i32;
    }
    let on: i32 = 1;
    // SAFETY: the socket is open (borrowed); the value is a live i32 and its length is given.
    let set = unsafe {
        setsockopt(socket.as_raw_socket() as usize, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (&raw const on).cast(), 4)
    };
    if set != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Gives a stream accepted from a [`listen_prepared`] socket the options its listener
/// could not pass on: none on Linux; elsewhere inheritance differs by system, so all of them.
pub(crate) fn tune_accepted(stream: &TcpStream, opts: &SocketOptions) -> io::Result<()> {
    if cfg!(target_os = "linux") { Ok(()) } else { tune(&SockRef::from(stream), opts) }
}

/// [`tune_accepted`] for a client accepted from a [`listen`] socket: its timeouts too.
pub(crate) fn tune_client(stream: &TcpStream, opts: &SocketOptions, client: ClientTimeouts) -> io::Result<()> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    tune_accepted(stream, opts)?;
    set_client_timeouts(&SockRef::from(stream), client)
}

fn set_client_timeouts(socket: &SockRef<'_>, client: ClientTimeouts) -> io::Result<()> {
    socket.set_read_timeout(Some(client.read))?;
    socket.set_write_timeout(Some(client.write))
}

fn tune(socket: &SockRef<'_>, opts: &SocketOptions) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    if let Some(idle) = opts.keepalive {
        // Turns SO_KEEPALIVE on as well.
        socket.set_tcp_keepalive(&keepalive_params(idle))?;
    }
    if let Some(size) = opts.sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    if let Some(size) = opts.rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    Ok(())
}

fn keepalive_params(idle: Duration) -> TcpKeepalive {
    let params = TcpKeepalive::new().with_time(idle);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    let params = params.with_interval(idle.min(Duration::from_secs(10)).max(Duration::from_secs(1)));
    params
}

/// Opens a non-blocking TCP socket of `addr`'s family with the options on, runs `prepare`
/// on it (to bind it to a source address or an interface), and starts its connect; says
/// whether it connected at once. Options go on before the connect so buffer sizes shape
/// the window scaling the handshake negotiates. The caller waits for the rest
/// (`readiness::wait_connects`), then takes the stream with [`connected`] or the reason
/// with [`connect_error`]. Per attempt that is socket, the options, connect, poll and one
/// ioctl: what a blocking connect bounded by SO_SNDTIMEO cost, and it can be raced.
pub(crate) fn start_connect(
    addr: SocketAddr,
    opts: &SocketOptions,
    prepare: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<(Socket, bool)> {
    let socket = nonblocking_stream(addr)?;
    tune(&SockRef::from(&socket), opts)?;
    prepare(&socket)?;
    match socket.connect(&addr.into()) {
        Ok(()) => Ok((socket, true)),
        Err(e) if connect_under_way(&e) => Ok((socket, false)),
        Err(e) => Err(e),
    }
}

/// Where the system can, the socket is non-blocking from its creation: no extra call.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn nonblocking_stream(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn nonblocking_stream(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Whether a non-blocking connect goes on in the background. An interrupted one does too.
#[cfg(unix)]
fn connect_under_way(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR))
}

#[cfg(not(unix))]
fn connect_under_way(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The stream of a socket whose connect succeeded, blocking again for the relay (std's
/// set_nonblocking is one ioctl on Linux, where socket2's is two fcntl calls).
pub(crate) fn connected(socket: Socket) -> io::Result<TcpStream> {
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Why a started connect failed: the socket's pending error.
pub(crate) fn connect_error(socket: &Socket) -> io::Error {
    match socket.take_error() {
        Ok(Some(e)) | Err(e) => e,
        Ok(None) => io::ErrorKind::NotConnected.into(),
    }
}

/// Binds an outbound TCP socket, before its connect, to the source address `source` (port
/// 0). On Linux the port is left for the connect to choose (IP_BIND_ADDRESS_NO_PORT), so
/// one source address serves a port range per target rather than one for all targets.
pub(crate) fn bind_source(socket: &Socket, source: SocketAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    bind_address_no_port(socket)?;
    socket.bind(&source.into())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // IP_BIND_ADDRESS_NO_PORT has no safe wrapper in std or socket2
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open (borrowed); the value is a live c_int and its length is given.
    // IPPROTO_IP options apply to IPv6 sockets too.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            len,
        )
    };
    if set != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Binds `socket` to the interface `name`: it sends and receives by that interface alone,
/// whatever the routing table says. On Linux SO_BINDTODEVICE takes the name, so an
/// interface deleted and made again (a VPN restarting) is found again.
#[cfg(target_os = "linux")]
pub(crate) fn bind_device(socket: &Socket, _ipv6: bool, name: &str) -> io::Result<()> {
    socket.bind_device(Some(name.as_bytes()))
}

/// On macOS IP_BOUND_IF and IPV6_BOUND_IF take an index, looked up for each socket for the
/// same reason.
#[cfg(target_os = "macos")]
pub(crate) fn bind_device(socket: &Socket, ipv6: bool, name: &str) -> io::Result<()> {
    let index = interface_index(name)?;
    if ipv6 { socket.bind_device_by_index_v6(Some(index)) } else { socket.bind_device_by_index_v4(Some(index)) }
}

#[cfg(target_os = "macos")]
#[allow(unsafe_code)] // if_nametoindex has no safe wrapper in std or socket2
fn interface_index(name: &str) -> io::Result<std::num::NonZeroU32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an interface name holds no NUL"))?;
    // SAFETY: c_name is a NUL-terminated string that lives through the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    std::num::NonZeroU32::new(index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface named {name}")))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) fn bind_device(_socket: &Socket, _ipv6: bool, _name: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "binding to an interface needs Linux or macOS"))
}

/// Opens a UDP socket bound to `addr` with the configured buffer sizes. An IPv4 socket gets
/// SO_BROADCAST, so a datagram to 255.255.255.255 or a subnet broadcast is sent rather
/// than refused with EACCES; IPv6 has no broadcast, and its socket is IPv6-only so each
/// family has a socket of its own.
pub(crate) fn udp_bind(addr: SocketAddr, opts: &UdpOptions) -> io::Result<UdpSocket> {
    udp_bind_prepared(addr, opts, |_| Ok(()))
}

/// [`udp_bind`], with `prepare` run on the socket before it is bound (to bind it to an
/// interface).
pub(crate) fn udp_bind_prepared(
    addr: SocketAddr,
    opts: &UdpOptions,
    prepare: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    prepare(&socket)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    } else {
        socket.set_broadcast(true)?;
    }
    if let Some(size) = opts.sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    if let Some(size) = opts.rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::net::readiness::Connect;

    #[test]
    fn accepted_streams_carry_the_options() {
        let opts = SocketOptions {
            keepalive: Some(Duration::from_secs(30)),
            sndbuf: Some(256 * 1024),
            rcvbuf: Some(512 * 1024),
        };
        let client = ClientTimeouts { read: Duration::from_secs(7), write: Duration::from_secs(11) };
        let listener = listen("127.0.0.1:0".parse().unwrap(), &opts, client).unwrap();
        assert_eq!(SockRef::from(&listener).reuse_address().unwrap(), cfg!(unix), "SO_REUSEADDR on unix only");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        tune_client(&accepted, &opts, client).unwrap();
        assert_eq!(accepted.read_timeout().unwrap(), Some(client.read));
        assert_eq!(accepted.write_timeout().unwrap(), Some(client.write));
        let sock = SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        #[cfg(not(any(windows, target_os = "openbsd", target_os = "haiku")))]
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        // Linux doubles the value it is given for bookkeeping; others keep it.
        assert!(sock.send_buffer_size().unwrap() >= 256 * 1024);
        assert!(sock.recv_buffer_size().unwrap() >= 512 * 1024);
    }

    #[test]
    fn no_other_socket_can_take_a_listening_address() {
        let config = Config::default();
        let listener = listen("127.0.0.1:0".parse().unwrap(), &config.socket, config.client_timeouts()).unwrap();
        // SO_REUSEADDR is what lets a socket bind a port in use on Windows, unless the
        // listener has SO_EXCLUSIVEADDRUSE.
        let intruder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        intruder.set_reuse_address(true).unwrap();
        assert!(intruder.bind(&listener.local_addr().unwrap().into()).is_err(), "the address was taken");
    }

    /// Connects to `addr` the way the race does, waiting as long as it takes.
    fn connect(addr: SocketAddr, opts: &SocketOptions) -> io::Result<TcpStream> {
        let (socket, at_once) = start_connect(addr, opts, |_| Ok(()))?;
        if !at_once {
            loop {
                match crate::net::readiness::wait_connects(&[&socket], |s| s, Duration::from_secs(5))? {
                    None => {}
                    Some((_, Connect::Connected)) => break,
                    Some((_, Connect::Failed)) => return Err(connect_error(&socket)),
                }
            }
        }
        connected(socket)
    }

    #[test]
    fn connected_streams_carry_the_options_and_block() {
        let opts = SocketOptions { keepalive: Some(Duration::from_secs(30)), sndbuf: Some(256 * 1024), rcvbuf: None };
        let config = Config::default();
        let listener = listen("127.0.0.1:0".parse().unwrap(), &config.socket, config.client_timeouts()).unwrap();
        let stream = connect(listener.local_addr().unwrap(), &opts).unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        // Linux doubles the value it is given for bookkeeping; others keep it.
        assert!(sock.send_buffer_size().unwrap() >= 256 * 1024);
        assert_eq!(sock.write_timeout().unwrap(), None, "no timeout is left on for the relay");
        #[cfg(unix)]
        assert!(!sock.nonblocking().unwrap(), "the relay reads block");
    }

    #[test]
    fn connect_errors_keep_their_kind() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let refused = connect(closed, &Config::default().socket).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn udp_sockets_broadcast_with_their_buffers() {
        let opts = UdpOptions { rcvbuf: Some(512 * 1024), sndbuf: Some(256 * 1024), ..Config::default().udp };
        let v4 = udp_bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let sock = SockRef::from(&v4);
        assert!(sock.broadcast().unwrap());
        assert!(sock.recv_buffer_size().unwrap() >= 512 * 1024);
        assert!(sock.send_buffer_size().unwrap() >= 256 * 1024);
        let v6 = udp_bind("[::1]:0".parse().unwrap(), &opts).unwrap();
        assert!(SockRef::from(&v6).only_v6().unwrap());
    }
}
