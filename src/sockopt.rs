//! Every socket option burrowd sets, in one place, through socket2.

use crate::config::{SocketOptions, UdpOptions};
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Pending connections the kernel holds for each listener before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Opens a listener with SO_REUSEADDR (so a restart does not wait out TIME_WAIT). An IPv6
/// listener is IPv6-only, so `[::]:1080` and `0.0.0.0:1080` can both be given.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Applies TCP_NODELAY, keepalive and buffer sizes to a connected or accepted stream.
pub fn tune_stream(stream: &TcpStream, opts: &SocketOptions) -> io::Result<()> {
    tune(&SockRef::from(stream), opts)
}

fn tune(socket: &SockRef<'_>, opts: &SocketOptions) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    if let Some(idle) = opts.keepalive {
        socket.set_keepalive(true)?;
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

/// Connects to `addr` within `timeout`. Options go on before the connect so buffer sizes
/// shape the window scaling the handshake negotiates.
pub fn connect(addr: SocketAddr, timeout: Duration, opts: &SocketOptions) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    tune(&SockRef::from(&socket), opts)?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// Opens a UDP socket bound to `addr` with the configured buffer sizes. An IPv4 socket gets
/// SO_BROADCAST, so a datagram to 255.255.255.255 or a subnet broadcast is sent rather
/// than refused with EACCES; IPv6 has no broadcast, and its socket is IPv6-only so each
/// family has a socket of its own.
pub fn udp_bind(addr: SocketAddr, opts: &UdpOptions) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
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
    use crate::Config;

    #[test]
    fn connected_streams_carry_the_options() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(SockRef::from(&listener).reuse_address().unwrap());
        let opts = SocketOptions { keepalive: Some(Duration::from_secs(30)), sndbuf: Some(256 * 1024), rcvbuf: None };
        let stream = connect(listener.local_addr().unwrap(), Duration::from_secs(1), &opts).unwrap();
        let sock = SockRef::from(&stream);
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        // Linux doubles the value it is given for bookkeeping; others keep it.
        assert!(sock.send_buffer_size().unwrap() >= 256 * 1024);
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
