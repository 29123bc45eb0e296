//! SOCKS4 and SOCKS4a over loopback: CONNECT and BIND, refusals with 91, requests split
//! or followed by data, the policy for services with users, and what is not SOCKS at all.

mod common;

use burrowd::Config;
use burrowd::config::Socks4Policy;
use burrowd::wire::addr::Addr;
use burrowd::wire::socks4::{Command, Reply, ReplyCode};
use common::*;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

fn ip(addr: SocketAddr) -> Addr<'static> {
    Addr::Ip(addr)
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("{addr} is not IPv4"),
    }
}

fn assert_rejected(reply: Reply) {
    assert_eq!(reply, Reply::rejected(), "91 with zeros");
}

#[test]
fn socks4_connect_relays_to_the_target() {
    let (_server, proxy) = proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy);
    let reply = socks4_request(&mut client, Command::Connect, ip(target), b"alice");
    assert_eq!(reply.code, ReplyCode::Granted);
    assert_eq!(reply.addr.ip().octets(), [127, 0, 0, 1], "the outbound socket's address");
    assert_carries(&client, &client, b"hello through SOCKS4");
    t!(client.shutdown(std::net::Shutdown::Write));
    assert_eq!(read_to_end(&mut client), b"", "the echo's FIN comes back after ours");
}

#[test]
fn socks4a_connect_resolves_localhost() {
    let (_server, proxy) = proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy);
    let reply = socks4_request(&mut client, Command::Connect, Addr::Domain("localhost", target.port()), b"");
    assert_eq!(reply.code, ReplyCode::Granted);
    assert_carries(&client, &client, b"hello through SOCKS4a");
}

#[test]
fn socks4_bind_relays_a_third_party() {
    let (_server, proxy) = proxy();
    let mut control = connect(proxy);
    let first = socks4_request(&mut control, Command::Bind, ip("0.0.0.0:0".parse().unwrap()), b"ftp");
    assert_eq!(first.code, ReplyCode::Granted);
    assert_eq!(first.addr.ip().octets(), [127, 0, 0, 1]);
    assert_ne!(first.addr.port(), 0);

    let mut peer = connect(SocketAddr::V4(first.addr));
    let second = read_socks4_reply(&mut control);
    assert_eq!(second, Reply { code: ReplyCode::Granted, addr: v4(t!(peer.local_addr())) });
    assert_carries(&peer, &control, b"from the peer");
    assert_carries(&control, &peer, b"from the client");
    assert_half_close(&mut control, &mut peer);
}

#[test]
fn socks4_bind_over_ipv6_replies_zeros_for_the_address_it_cannot_carry() {
    let (_server, proxy) = start(Config::socks_on("[::1]:0".parse().unwrap()));
    let mut control = connect(proxy);
    let first = socks4_request(&mut control, Command::Bind, ip("0.0.0.0:0".parse().unwrap()), b"");
    assert_eq!(first.code, ReplyCode::Granted);
    assert!(first.addr.ip().is_unspecified(), "0.0.0.0 means the proxy's own address: {first:?}");
    let peer = connect(SocketAddr::new(proxy.ip(), first.addr.port()));
    let second = read_socks4_reply(&mut control);
    let peer_port = t!(peer.local_addr()).port();
    assert_eq!(second, Reply { code: ReplyCode::Granted, addr: SocketAddrV4::new([0, 0, 0, 0].into(), peer_port) });
    assert_carries(&peer, &control, b"over IPv6");
}

#[test]
fn socks4_bind_refuses_a_wrong_peer_with_91() {
    let (_server, proxy) = proxy();
    let mut control = connect(proxy);
    let first = socks4_request(&mut control, Command::Bind, ip("127.0.0.2:0".parse().unwrap()), b"");
    assert_eq!(first.code, ReplyCode::Granted);
    let _stranger = connect(SocketAddr::V4(first.addr));
    assert_rejected(read_socks4_reply(&mut control));
    assert_closed_without_reply(&mut control);
}

#[test]
fn socks4_bind_timeout_gives_91() {
    let config =
        Config { bind_timeout: Duration::from_millis(300), ..Config::socks_on("127.0.0.1:0".parse().unwrap()) };
    let (_server, proxy) = start(config);
    let mut control = connect(proxy);
    let first = socks4_request(&mut control, Command::Bind, ip("0.0.0.0:0".parse().unwrap()), b"");
    assert_eq!(first.code, ReplyCode::Granted);
    assert_rejected(read_socks4_reply(&mut control));
    assert_closed_without_reply(&mut control);
}

#[test]
fn refused_target_gives_91() {
    let (_server, proxy) = proxy();
    let mut client = connect(proxy);
    assert_rejected(socks4_request(&mut client, Command::Connect, ip(closed_port()), b""));
    assert_closed_without_reply(&mut client);
}

#[test]
fn malformed_requests_give_91() {
    let (_server, proxy) = proxy();
    let unknown_command = [4, 3, 0, 80, 127, 0, 0, 1, 0];
    let endless_userid = [&[4, 1, 0, 80, 127, 0, 0, 1][..], &[b'x'; 300]].concat();
    let empty_4a_host = [4, 1, 0, 80, 0, 0, 0, 1, 0, 0];
    for request in [&unknown_command[..], &endless_userid, &empty_4a_host] {
        let mut client = connect(proxy);
        t!(client.write_all(request));
        assert_rejected(read_socks4_reply(&mut client));
        assert_closed_without_reply(&mut client);
    }
}

/// The 255-byte limit on a USERID holds however the bytes arrive: with the NUL in the same
/// write as the rest, or behind a pause.
#[test]
fn a_userid_past_255_bytes_gives_91_in_one_write_or_two() {
    let (_server, proxy) = proxy();
    let target = echo_server("127.0.0.1:0");
    let [a, b, c, d] = match target.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        other => panic!("{other}"),
    };
    let port = target.port().to_be_bytes();
    let request = [&[4, 1, port[0], port[1], a, b, c, d][..], &[b'x'; 300], &[0]].concat();
    for split in [request.len(), 200] {
        let mut client = connect(proxy);
        t!(client.set_nodelay(true));
        t!(client.write_all(&request[..split]));
        std::thread::sleep(Duration::from_millis(50));
        // The proxy may have answered and closed already; what counts is its reply.
        let _ = client.write_all(&request[split..]);
        assert_rejected(read_socks4_reply(&mut client));
    }
}

#[test]
fn request_split_into_single_bytes() {
    let (_server, proxy) = proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy);
    t!(client.set_nodelay(true));
    for byte in socks4_request_bytes(Command::Connect, Addr::Domain("localhost", target.port()), b"bob") {
        t!(client.write_all(&[byte]));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_socks4_reply(&mut client).code, ReplyCode::Granted);
    assert_carries(&client, &client, b"reassembled");
}

#[test]
fn data_pipelined_behind_the_request_reaches_the_target() {
    let (_server, proxy) = proxy();
    let target = echo_server("127.0.0.1:0");
    for addr in [ip(target), Addr::Domain("localhost", target.port())] {
        let mut client = connect(proxy);
        let mut bytes = socks4_request_bytes(Command::Connect, addr, b"eager");
        bytes.extend_from_slice(b"PING before the reply");
        t!(client.write_all(&bytes));
        assert_eq!(read_socks4_reply(&mut client).code, ReplyCode::Granted);
        let mut echoed = [0u8; 21];
        t!(std::io::Read::read_exact(&mut client, &mut echoed));
        assert_eq!(&echoed, b"PING before the reply", "{addr}");
    }
}

/// A target that must not be contacted: the test checks nothing reached its queue.
fn untouched_target() -> TcpListener {
    let listener = t!(TcpListener::bind("127.0.0.1:0"));
    t!(listener.set_nonblocking(true));
    listener
}

#[test]
fn users_configured_refuse_socks4_unless_allowed() {
    let users = Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["alice:secret"]);

    let (_server, proxy) = start(users.clone());
    let target = untouched_target();
    let mut client = connect(proxy);
    assert_rejected(socks4_request(&mut client, Command::Connect, ip(t!(target.local_addr())), b"alice"));
    assert_closed_without_reply(&mut client);
    let err = target.accept().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "the target was contacted: {err}");

    let (_server, proxy) = start(with_socks4(users, Socks4Policy::On));
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy);
    assert_eq!(socks4_request(&mut client, Command::Connect, ip(target), b"").code, ReplyCode::Granted);
    assert_carries(&client, &client, b"allowed by --socks4");
}

#[test]
fn no_socks4_closes_without_a_reply_and_keeps_socks5() {
    let (_server, proxy) = start(with_socks4(Config::socks_on("127.0.0.1:0".parse().unwrap()), Socks4Policy::Off));
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy);
    t!(client.write_all(&socks4_request_bytes(Command::Connect, ip(target), b"")));
    assert_closed_without_reply(&mut client);

    let tunnel = socks5_connect(proxy, target);
    assert_carries(&tunnel, &tunnel, b"SOCKS5 still served");
}

#[test]
fn garbage_first_byte_is_closed_without_a_reply() {
    // With HTTP on (the default), any other first byte is an HTTP request: see http_proxy.rs.
    let (_server, proxy) = start(without_http(Config::socks_on("127.0.0.1:0".parse().unwrap())));
    for garbage in [&b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], &[0x16, 3, 1, 0, 0x2e], &[0]] {
        let mut client: TcpStream = connect(proxy);
        t!(client.write_all(garbage));
        assert_closed_without_reply(&mut client);
    }
}
